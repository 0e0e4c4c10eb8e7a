"""The simulated bench: MockFactory pins watched by a physical model; sensors on real protocols."""
