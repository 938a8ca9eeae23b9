"""Emulated Okta, Jira Data Center and Confluence Data Center: oktasync's test servers.

A distribution of its own (``oktasync-emulators``, in ``emulators/`` of the oktasync
repository) that imports nothing from ``oktasync``: each server is written from the vendor's
reference, so a misreading of an API in the engine cannot be shared by the server that tests
it, and a production install of the engine carries no test servers.
"""
