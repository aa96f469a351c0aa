"""The bureau's web portal for evaluators and admins (`tieragent bureau web`)."""

from bureau.web.app import create_app
from bureau.web.settings import WebSettings

__all__ = ["WebSettings", "create_app"]
