"""The Kivy kiosk: the clinician programmer, a client of the rig service API."""
