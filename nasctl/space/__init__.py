"""Search spaces, architecture strings and sampling."""

from nasctl.space.space import Arch, SearchSpace, builtin_spaces, load_space, parse_op

__all__ = ["Arch", "SearchSpace", "builtin_spaces", "load_space", "parse_op"]
