"""oktasync: keep Jira and Confluence Data Center in line with Okta."""

__version__ = "0.1.0"
