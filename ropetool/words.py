"""How reports write a number, a setting's parameters and a list of layers or pairs: one way for all of them."""


def number(x) -> str:
    """A float in six significant digits (``%g``), anything else as ``str``."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def parameters(values: dict, eq: str = " ") -> str:
    """``factor 4, original_context 8192``: the scalar values of ``values`` (lists left out); "" when none."""
    return ", ".join(f"{k}{eq}{number(v)}" for k, v in values.items() if not isinstance(v, list))


def ranges(xs: list[int], sep: str = ",") -> str:
    """Ascending integers as runs, ``0-3,5,7-9`` ("none" when there are none)."""
    if not xs:
        return "none"
    out, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return sep.join(out)
