"""Hardware layer: pins, syringe drive, step generation, flow sensor, balance, buzzer, LEDs.

The same drivers run on a Raspberry Pi (lgpio / RPi.GPIO pin factories, I2C, serial) and on the
simulated bench (gpiozero MockFactory pins watched by a physical model, sensors speaking their real
wire protocols). Nothing in this package knows about doses or therapy.
"""
