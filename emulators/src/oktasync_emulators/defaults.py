"""The emulators' default address and demo credentials, in a module with no imports.

The command line shows these as defaults and ``oktasync demo`` reads the ports; keeping them
apart from the emulators means neither loads the servers (and ``aiohttp.web``) for them.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = (8471, 8472, 8473)  # okta, jira, confluence
DEMO_OKTA_TOKEN = "00demo-oktasync-okta-api-token"
DEMO_ADMIN_USER = "admin"
DEMO_ADMIN_PASSWORD = "admin"
DEMO_JIRA_TOKEN = "demo-jira-personal-access-token"
DEMO_CONFLUENCE_TOKEN = "demo-confluence-personal-access-token"
