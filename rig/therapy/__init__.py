"""The pure therapy domain: units, clocks, drugs and limits, programs, the delivery plan,
reservoir and battery, the alarm catalogue, patient boluses, the engine and fast-forward
simulation. No hardware, server, database or Kivy here."""
