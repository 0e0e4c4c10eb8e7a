"""Volume and rate calibration, trumpet curves, occlusion test, refill check, reports."""
