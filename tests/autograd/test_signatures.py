"""Every function of autograd.functional that torch.nn.functional also has takes torch's arguments.

The rule, checked with inspect.signature against the installed torch:

  1. Our parameters are torch's, in torch's order, with torch's names and defaults, except for
     the differences written in DIFFERENCES below (each with its reason). The kinds of difference:
       omitted   torch's parameters we do not take (unsupported or deprecated features);
       extra     our parameters torch does not have (for example the random generator `rng`); they
                 come after torch's and are keyword-only;
       default   a parameter of both whose default differs: our default is written down;
       pending   a known mismatch not yet fixed: our whole signature, as inspect prints it.
  2. Prefix-compatible: a positional call written for torch means the same here. So our parameters
     are positional-or-keyword up to the first torch parameter we omit, and keyword-only after it
     (a positional value there would land on a different parameter than in torch).
  3. torch's first parameter, the tensor operand that is always passed by position (`input`,
     `tensor`, `logits`), may have another name here (x, a, logits, probs, indices, ...).
  4. torch's private parameters (a leading underscore, such as softmax's _stacklevel) are not API.

A difference that is not listed fails the test, and so does a listed one that no longer holds (so
the list stays true). Where torch gives no Python signature (C builtins such as conv2d), the
signature is read from the first line of torch's docstring, as its documentation prints it.
"""
import ast
import inspect
import re

import pytest

import autograd.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

P = inspect.Parameter

LEGACY = "deprecated in torch since 0.4.1: `reduction` replaces it"
INPLACE = "no in-place ops: a Function's output is a new array (the graph keeps its inputs)"
RNG = "randomness comes from an explicit NumPy/CuPy Generator (torch uses its global generator)"
LOSS_WEIGHT = "per-class / per-element loss weights are not implemented"
DIM_DEFAULT = ("torch's None picks an axis from the input's rank (deprecated there, with a warning); "
               "we default to the last axis")

# function -> {kind: {parameter: reason}}; for "default": {parameter: (our default, reason)};
# for "pending": (our signature, reason)
DIFFERENCES = {
    "avg_pool2d": {"omitted": {
        "ceil_mode": "output sizes always round down",
        "count_include_pad": "always True (torch's default): the zero padding is counted",
        "divisor_override": "the divisor is always kh * kw"}},
    "batch_norm": {},
    "binary_cross_entropy": {"omitted": {"weight": LOSS_WEIGHT, "size_average": LEGACY, "reduce": LEGACY}},
    "binary_cross_entropy_with_logits": {"omitted": {
        "weight": LOSS_WEIGHT, "size_average": LEGACY, "reduce": LEGACY,
        "pos_weight": "positive-class weights are not implemented"}},
    "cross_entropy": {"omitted": {"weight": LOSS_WEIGHT, "size_average": LEGACY, "reduce": LEGACY}},
    "dropout": {"omitted": {"inplace": INPLACE}, "extra": {"rng": RNG}},
    "embedding": {"omitted": {
        "max_norm": "rows are never renormalised", "norm_type": "goes with max_norm",
        "scale_grad_by_freq": "gradients are not scaled by frequency",
        "sparse": "gradients are dense arrays"}},
    "gelu": {"omitted": {
        "approximate": "the tanh approximation is the only one computed (torch's approximate='tanh'; "
                       "torch's default 'none' is the exact erf form)"}},
    "gumbel_softmax": {"omitted": {"eps": "deprecated and unused in torch"}, "extra": {"rng": RNG}},
    "interpolate": {"omitted": {
        "align_corners": "only mode='nearest', where it does not apply",
        "recompute_scale_factor": "only integer scale factors, which need no recomputing",
        "antialias": "only mode='nearest', where it does not apply"}},
    "l1_loss": {"omitted": {"size_average": LEGACY, "reduce": LEGACY, "weight": LOSS_WEIGHT}},
    "leaky_relu": {"omitted": {"inplace": INPLACE}},
    "log_softmax": {"omitted": {"dtype": "the output has the input's dtype"},
                    "default": {"dim": (-1, DIM_DEFAULT)}},
    "max_pool2d": {"omitted": {
        "dilation": "pooling windows are dense", "ceil_mode": "output sizes always round down",
        "return_indices": "the argmax stays inside the op (for its backward)"}},
    "mse_loss": {"omitted": {"size_average": LEGACY, "reduce": LEGACY, "weight": LOSS_WEIGHT}},
    "nll_loss": {"omitted": {"weight": LOSS_WEIGHT, "size_average": LEGACY, "reduce": LEGACY}},
    "relu": {"omitted": {"inplace": INPLACE}},
    "scaled_dot_product_attention": {"omitted": {"enable_gqa": "grouped-query attention is not implemented"},
                                     "extra": {"rng": RNG}},
    "silu": {"omitted": {"inplace": INPLACE}},
    "softmax": {"omitted": {"dtype": "the output has the input's dtype"}, "default": {"dim": (-1, DIM_DEFAULT)}},
    "softplus": {"omitted": {"beta": "softplus(x) = log(1 + exp(x)) only (beta = 1)",
                             "threshold": "computed stably for every x, with no linear cut-over"}},
}
KINDS = {"omitted", "extra", "default", "pending"}


def _docstring_signature(fn):
    """The signature printed at the top of a torch builtin's docstring, e.g.
    'conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor'."""
    doc = fn.__doc__ or ""
    start = re.search(rf"\b{fn.__name__}\(", doc)
    assert start, f"torch.nn.functional.{fn.__name__}: no signature in its docstring"
    depth = 0
    for i in range(start.end() - 1, len(doc)):  # to the parenthesis that closes the argument list
        depth += {"(": 1, ")": -1}.get(doc[i], 0)
        if depth == 0:
            break
    args = ast.parse(f"def f{doc[start.end() - 1:i + 1]}: pass").body[0].args
    params = []
    positional = args.posonlyargs + args.args
    defaults = [P.empty] * (len(positional) - len(args.defaults)) + [ast.literal_eval(d) for d in args.defaults]
    for a, d in zip(positional, defaults):
        params.append(P(a.arg, P.POSITIONAL_OR_KEYWORD, default=d))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        params.append(P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else ast.literal_eval(d)))
    return inspect.Signature(params)


def torch_signature(name):
    fn = getattr(TF, name)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a C builtin
        return _docstring_signature(fn)
    if any(p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in sig.parameters.values()):
        return _docstring_signature(fn)  # a dispatching wrapper such as max_pool2d
    return sig


def expected_signature(ours, theirs, diff):
    """Our signature as the rule and the listed differences say it must be."""
    omitted, extra, default = diff.get("omitted", {}), diff.get("extra", {}), diff.get("default", {})
    first = next(iter(ours.parameters), None)
    params, gap = [], False
    for i, p in enumerate(theirs.parameters.values()):
        if p.name.startswith("_"):
            continue
        if p.name in omitted:
            gap = True
            continue
        # rule 2: keyword-only after the first omitted parameter
        kind = P.KEYWORD_ONLY if gap or p.kind == P.KEYWORD_ONLY else P.POSITIONAL_OR_KEYWORD
        # rule 3: the first operand may keep our name
        pname = first if i == 0 and first is not None else p.name
        params.append(P(pname, kind, default=default[p.name][0] if p.name in default else p.default))
    for e in extra:  # after torch's parameters, keyword-only, with the default we chose
        if e not in theirs.parameters:  # (an extra that torch has is reported by `problems`)
            params.append(P(e, P.KEYWORD_ONLY, default=ours.parameters[e].default if e in ours.parameters else None))
    return inspect.Signature(params)


def _listed(sig):
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def problems(name, ours, theirs, diff):
    """What is wrong with our signature `ours` against torch's `theirs` and the listed differences."""
    if "pending" in diff:
        pinned, why = diff["pending"]
        if str(ours) != pinned:
            return [f"{name}: the pending entry {pinned} ({why}) no longer holds: ours is now {ours}, torch's "
                    f"{theirs}; update or remove the entry"]
        return []
    found = []
    torch_names = [p for p in theirs.parameters if not p.startswith("_")]
    for p in diff.get("omitted", {}):
        if p not in torch_names:
            found.append(f"{name}: '{p}' is listed as omitted but torch has no such parameter: {theirs}")
        if p in ours.parameters:
            found.append(f"{name}: '{p}' is listed as omitted but we take it now: {ours}")
    for p in diff.get("extra", {}):
        if p not in ours.parameters:
            found.append(f"{name}: '{p}' is listed as extra but we do not take it: {ours}")
        if p in torch_names:
            found.append(f"{name}: '{p}' is listed as extra but torch has it too: {theirs}")
    for p, (value, why) in diff.get("default", {}).items():
        if p not in theirs.parameters or p not in ours.parameters:
            found.append(f"{name}: a default of '{p}' is listed, but torch or we have no such parameter")
        elif theirs.parameters[p].default == value:
            found.append(f"{name}: '{p}' is listed with default {value!r} ({why}), but that is torch's default "
                         f"too: remove the entry")
    expected = expected_signature(ours, theirs, diff)
    # compared as lists: inspect.Signature's == ignores the order of keyword-only parameters
    if _listed(ours) != _listed(expected):
        found.append(f"{name}: our signature {ours} does not follow torch's {theirs}; with the listed "
                     f"differences the rule asks for {expected}")
    return found


def shared_names():
    return sorted(n for n in dir(F) if not n.startswith("_") and callable(getattr(F, n)) and hasattr(TF, n))


def test_the_differences_name_shared_functions_and_known_kinds():
    shared = set(shared_names())
    assert not set(DIFFERENCES) - shared, f"entries for functions torch and we do not share: " \
                                          f"{sorted(set(DIFFERENCES) - shared)}"
    for name, diff in DIFFERENCES.items():
        assert set(diff) <= KINDS, f"{name}: unknown kinds {sorted(set(diff) - KINDS)}, expected {sorted(KINDS)}"


@pytest.mark.parametrize("name", shared_names())
def test_signature_matches_torch(name):
    found = problems(name, inspect.signature(getattr(F, name)), torch_signature(name), DIFFERENCES.get(name, {}))
    assert not found, "\n".join(found)


def test_the_rule_tells_each_kind_of_mismatch():
    """The checker itself, on cross_entropy (ours: logits, target, *, ignore_index, reduction,
    label_smoothing): wrong orders, names, defaults, kinds and stale entries are each reported."""
    theirs, diff = torch_signature("cross_entropy"), DIFFERENCES["cross_entropy"]
    good = inspect.signature(F.cross_entropy)
    assert problems("cross_entropy", good, theirs, diff) == []
    a, b, ignore, reduction, smoothing = good.parameters.values()
    bad = {
        "swapped order": [a, b, ignore, smoothing, reduction],
        "another default": [a, b, ignore, reduction, smoothing.replace(default=0.1)],
        "another name": [a, b, ignore.replace(name="ignore"), reduction, smoothing],
        "a second operand renamed": [a, b.replace(name="labels"), ignore, reduction, smoothing],
        "positional after an omitted parameter": [a, b, ignore.replace(kind=P.POSITIONAL_OR_KEYWORD),
                                                  reduction, smoothing],
        "a parameter missing": [a, b, ignore, reduction],
        "an unlisted extra": [a, b, ignore, reduction, smoothing, P("rng", P.KEYWORD_ONLY, default=None)],
    }
    for what, params in bad.items():
        assert problems("cross_entropy", good.replace(parameters=params), theirs, diff), what
    stale = {
        "omitted, but taken": {"omitted": {**diff["omitted"], "label_smoothing": "?"}},
        "omitted, not torch's": {"omitted": {**diff["omitted"], "axis": "?"}},
        "an extra that is torch's": {**diff, "extra": {"reduction": "?"}},
        "a default that is torch's": {**diff, "default": {"reduction": ("mean", "?")}},
        "pending, but fixed": {"pending": ("(logits, target)", "?")},
    }
    for what, d in stale.items():
        assert problems("cross_entropy", good, theirs, d), what
