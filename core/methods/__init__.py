"""Method registry. Adding a method: one module + one import line below."""

from core.methods.base import LossParts, Method, MethodParams, get_method, list_methods, register_method, task_loss

from core.methods import joint  # noqa: F401,E402
from core.methods import unimodal  # noqa: F401,E402
from core.methods import ogm_ge  # noqa: F401,E402
from core.methods import mmpareto  # noqa: F401,E402
from core.methods import cpsl  # noqa: F401,E402
from core.methods import mie  # noqa: F401,E402

__all__ = ["LossParts", "Method", "MethodParams", "get_method", "list_methods", "register_method", "task_loss"]
from core.methods import purify  # noqa: F401,E402
from core.methods import gmm_adaptive  # noqa: F401,E402
from core.methods import cal  # noqa: F401,E402
from core.methods import ensemble  # noqa: F401,E402
