"""Therapy layer: units, programs, limits, clocks, delivery plan, reservoir, alarms and the service.

Imports ``hal`` for hardware; never imports Kivy.
"""
