"""Chert: the one client that talks to it (`client`), its retries (`retry`),
the redaction of what it says (`redact`), and its documented rules: the media
table (`media`) and the message shape (`message_shape`)."""
