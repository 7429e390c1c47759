"""Method registry. Adding a method: one module + one import line below."""

from modalscope.methods.base import LossParts, Method, MethodParams, get_method, list_methods, register_method, task_loss

from modalscope.methods import joint  # noqa: F401,E402
from modalscope.methods import unimodal  # noqa: F401,E402
from modalscope.methods import ogm_ge  # noqa: F401,E402
from modalscope.methods import mmpareto  # noqa: F401,E402
from modalscope.methods import cpsl  # noqa: F401,E402
from modalscope.methods import mie  # noqa: F401,E402

__all__ = ["LossParts", "Method", "MethodParams", "get_method", "list_methods", "register_method", "task_loss"]
from modalscope.methods import purify  # noqa: F401,E402
from modalscope.methods import gmm_adaptive  # noqa: F401,E402
from modalscope.methods import cal  # noqa: F401,E402
from modalscope.methods import ensemble  # noqa: F401,E402
