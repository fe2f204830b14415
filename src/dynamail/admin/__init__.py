"""Every administrative operation, with its rights check (see ``operations``)."""

from dynamail.admin.errors import CODES, AdminError
from dynamail.admin.operations import Admin
from dynamail.admin.rights import Actor, actor_of

__all__ = ["CODES", "Actor", "Admin", "AdminError", "actor_of"]
