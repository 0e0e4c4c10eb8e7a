"""Calibration procedures over rig and hal: volume, rate, flow sensor, IEC 60601-2-24 accuracy,
occlusion and patient bolus; their analysis, records and reports. They run inside the rig
service (found through the ``itbrig.calibrations`` entry point) or on a simulated bench under a
virtual clock (``itbrig calibrate ... --fast``)."""
