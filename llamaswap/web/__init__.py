"""The HTTP surface: a twisted.web Resource tree and the streaming reverse proxy."""
