"""Clients of the rig service: the HTTP client, the command-line commands and their text
formatting, and the launcher that starts a service on the simulated bench."""
