"""Keyword-only arguments after ``x``, with the old positional order kept for one release."""

from __future__ import annotations

import functools
import numbers
import warnings


def _show(value) -> str:
    if isinstance(value, (str, bool, numbers.Number)):
        return repr(value)
    return "..."


def keywords_after_x(*old_order: str):
    """Decorate ``fn(x, *, ...)`` so that positional arguments after ``x`` still work.

    ``old_order`` names the arguments that followed ``x`` positionally before they
    became keyword-only, in that (old) order.  A positional call is mapped by that
    order and emits a ``DeprecationWarning`` that names the keywords to use; more
    positional arguments than ``old_order`` names, or one also given by keyword, is a
    ``TypeError`` as for any Python function.

    Examples
    --------
    >>> import warnings
    >>> @keywords_after_x("b", "a")
    ... def f(x, *, a=1, b=2):
    ...     return x, a, b
    >>> f(0, a=5)
    (0, 5, 2)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     out = f(0, 7)
    >>> out, caught[0].category.__name__
    ((0, 1, 7), 'DeprecationWarning')
    >>> print(caught[0].message)                     # doctest: +ELLIPSIS
    f(x, 7): arguments after x are keyword-only; write f(x, b=7) ...
    """

    def decorate(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(x, *args, **kwargs):
            if args:
                if len(args) > len(old_order):
                    raise TypeError(
                        f"{name}() takes 1 positional argument (x) and keywords, "
                        f"got {1 + len(args)} positional arguments"
                    )
                names = old_order[: len(args)]
                for n in names:
                    if n in kwargs:
                        raise TypeError(f"{name}() got multiple values for argument {n!r}")
                given = ", ".join(_show(v) for v in args)
                keywords = ", ".join(f"{n}={_show(v)}" for n, v in zip(names, args, strict=True))
                warnings.warn(
                    f"{name}(x, {given}): arguments after x are keyword-only; write "
                    f"{name}(x, {keywords}) (positional use is deprecated and will be "
                    "removed in the next release)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs.update(zip(names, args, strict=True))
            return fn(x, **kwargs)

        return wrapper

    return decorate
