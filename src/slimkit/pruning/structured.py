"""Structured pruning: physically remove channels, neurons and attention heads so the model gets faster.

Dependency tracking is torch-pruning's (`torch_pruning.DependencyGraph`): pruning a unit removes the
matching rows/columns everywhere it is coupled (BatchNorm/LayerNorm, residual adds, concatenations,
flatten, q/k/v + attention output projection). Units to drop are ranked by an importance score:

- "l2" / "l1": group weight norm over every coupled layer (`tp.importance.GroupMagnitudeImportance`);
- "activation": mean |activation| of each unit on calibration data, measured where the unit is
  consumed (the input of the next layer, i.e. after BN / ReLU / GELU / pooling). Removing the units
  below a threshold τ is the neuron-pruning rule A·1(|A| > τ); τ is whatever hits the ratio.

Targets:
- "channels": output channels / neurons of every Conv / Linear (torch-pruning's `BasePruner`, the same
  ratio in every layer); the model's output layer is never pruned, so the number of classes stays.
- "heads" (Hugging Face BERT-like encoders): whole attention heads; q/k/v output rows and the
  attention output projection's input columns; the head size stays.
- "mlp" (same models): intermediate (FFN) neurons.
- "all": "heads" + "mlp" on a transformer, "channels" otherwise. The hidden (residual) width of a
  transformer is never pruned, so embeddings keep their dimension.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from slimkit.errors import SlimkitError, first_line

Target = Literal["channels", "heads", "mlp", "all"]
ImportanceName = Literal["l2", "l1", "activation"]


def _tp():
    import torch_pruning as tp

    return tp


# ---------------------------------------------------------------- importance


class ActivationImportance:
    """Per-unit importance = mean |activation| on calibration data (a `tp.importance.Importance`).

    `stats_in[module]` holds the mean |input| of each input channel of a Conv / Linear, `stats_out[module]`
    the mean |output| of each output channel. For a group, the scores of every consumer whose input
    channels are pruned are summed at the root's unit indices; when no consumer was seen (the unit
    feeds something that is not a Conv/Linear), the root layer's own output magnitudes are used.
    """

    def __init__(self, stats_in: dict, stats_out: dict) -> None:
        self.stats_in = stats_in
        self.stats_out = stats_out

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        tp = _tp()
        root_dep, root_idxs = group[0]
        n = len(root_idxs)
        total = torch.zeros(n)
        seen = 0
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            fn = dep.pruning_fn
            root = group[i].root_idxs
            if fn in (tp.prune_conv_in_channels, tp.prune_linear_in_channels) and layer in self.stats_in:
                if any(r is None for r in root):
                    continue
                values = self.stats_in[layer][torch.as_tensor(list(idxs))]
                total.scatter_add_(0, torch.as_tensor(list(root)), values.float())
                seen += 1
        if seen:
            return total
        layer = root_dep.layer
        if layer in self.stats_out:
            return self.stats_out[layer][torch.as_tensor(list(root_idxs))].float()
        return None


def _register_importance(obj) -> None:
    try:  # register as a torch-pruning Importance when the base class is available
        _tp().importance.Importance.register(obj)
    except AttributeError:
        pass


def collect_activation_stats(module: nn.Module, data: Iterable[dict[str, torch.Tensor]],
                             max_batches: int = 32) -> tuple[dict, dict]:
    """Mean |input channel| and mean |output channel| of every Conv / Linear over calibration batches."""
    sums_in: dict = {}
    sums_out: dict = {}
    counts: dict = {}

    def reduce(t: torch.Tensor, conv: bool) -> torch.Tensor:
        t = t.detach().abs().float()
        if conv:  # [N, C, ...] -> per C
            return t.transpose(0, 1).reshape(t.shape[1], -1).mean(1)
        return t.reshape(-1, t.shape[-1]).mean(0)

    def hook(mod, args, out):
        conv = isinstance(mod, nn.modules.conv._ConvNd)
        a = reduce(args[0], conv)
        o = reduce(out, conv)
        sums_in[mod] = sums_in.get(mod, 0) + a
        sums_out[mod] = sums_out.get(mod, 0) + o
        counts[mod] = counts.get(mod, 0) + 1

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    batches = 0
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in data:
                module(**batch)
                batches += 1
                if batches >= max_batches:
                    break
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    if not batches:
        raise SlimkitError("activation importance: the calibration data gave no batches",
                           "pass data with at least one batch")
    return ({m: s / counts[m] for m, s in sums_in.items()}, {m: s / counts[m] for m, s in sums_out.items()})


def make_importance(name: str, stats: tuple[dict, dict] | None = None):
    tp = _tp()
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "activation":
        assert stats is not None
        return ActivationImportance(*stats)
    raise SlimkitError(f"unknown pruning importance '{name}'", "use l2, l1 or activation")


_register_importance(ActivationImportance)


# ---------------------------------------------------------------- model structure


def _attention_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Hugging Face BERT-like self-attention modules (query/key/value Linears, head count, head size)."""
    found = []
    for name, m in module.named_modules():
        if all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value")) and \
                hasattr(m, "num_attention_heads") and hasattr(m, "attention_head_size"):
            found.append((name, m))
    return found


def _ffn_layers(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The first Linear of each BERT-like feed-forward block (`<layer>.intermediate.dense`)."""
    found = []
    for name, m in module.named_modules():
        inter = getattr(m, "intermediate", None)
        if inter is not None and isinstance(getattr(inter, "dense", None), nn.Linear) and \
                isinstance(getattr(getattr(m, "output", None), "dense", None), nn.Linear):
            found.append((f"{name}.intermediate.dense" if name else "intermediate.dense", inter.dense))
    return found


def _output_layers(module: nn.Module, example_inputs: dict) -> set[nn.Module]:
    """Conv / Linear layers that produce the model output (directly or through parameter-free ops / norms)."""
    produced: dict[Any, nn.Module] = {}

    def hook(mod, _args, out):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            produced[out.grad_fn] = mod

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    try:
        with torch.enable_grad():
            out = module(**example_inputs)
    finally:
        for h in hooks:
            h.remove()
    outputs = [t for t in _flatten(out) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    found: set[nn.Module] = set()
    seen = set()
    stack = [t.grad_fn for t in outputs]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in produced:
            found.add(produced[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return found


def _flatten(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flatten(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flatten(v)]
    if hasattr(obj, "to_tuple"):
        return _flatten(obj.to_tuple())
    return []


def _output_shapes(module: nn.Module, example_inputs: dict) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(t.shape) for t in _flatten(module(**example_inputs))]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _prunable_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def _listing(names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ---------------------------------------------------------------- API


def count_macs(module: nn.Module, example_inputs: dict) -> tuple[int, int]:
    """(MACs, params) of one forward pass on the example inputs (torch-pruning's op counter)."""
    with contextlib.redirect_stdout(io.StringIO()):  # its "assuming batch size is 1" notes
        macs, params = _tp().utils.count_ops_and_params(module, example_inputs)
    return int(macs), int(params)


def prune_structured(module: nn.Module, example_inputs: dict[str, torch.Tensor], *, ratio: float = 0.0,
                     target: Target = "channels", importance: ImportanceName = "l2",
                     data: Iterable[dict[str, torch.Tensor]] | None = None, ignore: Sequence[str] = (),
                     layers: Sequence[str] | None = None, round_to: int | None = None,
                     target_flop_reduction: float | None = None) -> dict:
    """Prune `module` in place (pass a deep copy to keep the original) and return statistics.

    ratio: fraction of the prunable units (channels / neurons / heads) removed in every layer, in [0, 1).
    layers: module-name patterns (fnmatch) of the layers to prune (default: every prunable layer);
    ignore: patterns never pruned. With `target_flop_reduction` (e.g. 0.5 = half the MACs) the ratio is
    searched by bisection and `ratio` is ignored.
    """
    if target not in ("channels", "heads", "mlp", "all"):
        raise SlimkitError(f"unknown pruning target '{target}'", "use channels, heads, mlp or all")
    if importance not in ("l2", "l1", "activation"):
        raise SlimkitError(f"unknown pruning importance '{importance}'", "use l2, l1 or activation")
    if target_flop_reduction is None and not 0 <= ratio < 1:
        raise SlimkitError(f"pruning ratio {ratio} is outside [0, 1)", "e.g. ratio: 0.5 removes half the units")
    if target_flop_reduction is not None and not 0 < target_flop_reduction < 1:
        raise SlimkitError(f"target_flop_reduction {target_flop_reduction} is outside (0, 1)",
                           "e.g. target_flop_reduction: 0.5 halves the multiply-accumulates")
    if round_to is not None and round_to < 1:
        raise SlimkitError(f"round_to {round_to} must be a positive integer", "e.g. round_to: 8")
    if importance == "activation" and data is None:
        raise SlimkitError("activation importance needs calibration data",
                           "pass data (a few representative batches), or use importance: l2")

    module.eval()
    all_names = _prunable_names(module)
    for pattern in ignore:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in module.named_modules() if n):
            raise SlimkitError(f"ignore pattern '{pattern}' matches no layer",
                               f"layers: {_listing(all_names)}")
    for pattern in layers or ():
        if not any(fnmatch.fnmatchcase(n, pattern) for n in all_names):
            raise SlimkitError(f"layers pattern '{pattern}' matches no Conv/Linear layer",
                               f"layers: {_listing(all_names)}")

    transformer = bool(_attention_blocks(module) or _ffn_layers(module))
    if target == "all":
        target_parts = ("heads", "mlp") if transformer else ("channels",)
    else:
        target_parts = (target,)
    if "channels" in target_parts and transformer:
        raise SlimkitError("target 'channels' would prune the hidden width of a transformer (and its output size)",
                           "use target: heads, mlp or all")

    stats_data = collect_activation_stats(module, data) if importance == "activation" else None
    plan = _Plan(module, example_inputs, target_parts, importance, stats_data, ignore, layers, round_to)

    macs_before, params_before = count_macs(module, example_inputs)
    shapes_before = _output_shapes(module, example_inputs)
    search = None
    if target_flop_reduction is not None:
        ratio, search = _search_ratio(plan, target_flop_reduction, macs_before)
    per_layer = plan.apply(module, ratio)
    _check_forward(module, example_inputs, shapes_before, per_layer)
    macs_after, params_after = count_macs(module, example_inputs)
    out = {
        "target": target, "importance": importance, "ratio": ratio,
        "macs_before": macs_before, "macs_after": macs_after,
        "mac_reduction": 1 - macs_after / macs_before if macs_before else 0.0,
        "params_before": params_before, "params_after": params_after,
        "layers": len(per_layer), "per_layer": per_layer,
        "units_before": sum(x["total"] for x in per_layer), "units_after": sum(x["kept"] for x in per_layer),
    }
    if search is not None:
        out["target_flop_reduction"] = target_flop_reduction
        out["search"] = search
    return out


def _search_ratio(plan: _Plan, goal: float, macs_before: int) -> tuple[float, list[dict]]:
    """Bisection on the ratio (on deep copies) for the MAC reduction closest to `goal`."""
    lo, hi = 0.0, 0.95
    best = (0.0, 0.0)
    trials = []
    cache: dict[float, float] = {}

    def reduction(r: float) -> float:
        if r not in cache:
            trial = copy.deepcopy(plan.module)
            plan.apply(trial, r)
            cache[r] = 1 - count_macs(trial, plan.example_inputs)[0] / macs_before
            trials.append({"ratio": round(r, 4), "mac_reduction": round(cache[r], 4)})
        return cache[r]

    # very high ratios can prune nothing (e.g. round_to rounds a layer down to zero units and the layer is
    # then left alone), so step down until the top of the bracket reaches the goal
    top = 0.0
    for hi in (0.95, 0.9, 0.8, 0.7, 0.6):
        top = reduction(hi)
        if top >= goal:
            break
    if top < goal:
        top = max(cache.values())
        raise SlimkitError(f"a {goal:.0%} MAC reduction is out of reach for target {'+'.join(plan.targets)}: "
                           f"pruning up to 95% of the units removes at most {top:.0%}",
                           "lower target_flop_reduction, or prune more kinds of units (target: all)")
    for _ in range(12):
        mid = (lo + hi) / 2
        red = reduction(mid)
        if abs(red - goal) < abs(best[1] - goal):
            best = (mid, red)
        if red < goal:
            lo = mid
        else:
            hi = mid
        if abs(red - goal) < 0.005:
            break
    if abs(top - goal) < abs(best[1] - goal):
        best = (hi, top)
    return best[0], trials


def _check_forward(module, example_inputs, shapes_before, per_layer) -> None:
    pruned = [x["layer"] for x in per_layer if x["kept"] < x["total"]]
    try:
        shapes_after = _output_shapes(module, example_inputs)
    except Exception as exc:  # a shape the dependency graph could not follow (hard-coded view/reshape, ...)
        raise SlimkitError(
            f"the pruned model no longer runs ({first_line(exc)}); pruned layers: {_listing(pruned)}",
            "a layer feeds a reshape/flatten with hard-coded sizes that torch-pruning cannot trace: "
            "add it to ignore") from exc
    if shapes_after != shapes_before:
        raise SlimkitError(f"pruning changed the model's output shape {shapes_before} -> {shapes_after}; "
                           f"pruned layers: {_listing(pruned)}",
                           "add the layers feeding the output to ignore")


class _Plan:
    """What to prune in a model, reusable on deep copies (for the ratio search)."""

    def __init__(self, module, example_inputs, targets, importance, stats, ignore, layers, round_to) -> None:
        self.module = module
        self.example_inputs = example_inputs
        self.targets = targets
        self.importance_name = importance
        self.stats = stats
        self.ignore = tuple(ignore)
        self.layers = tuple(layers) if layers else None
        self.round_to = round_to
        names = {m: n for n, m in module.named_modules()}
        self.output_layers = {names[m] for m in _output_layers(module, example_inputs)}
        self._check_selection()

    # names are resolved on each (deep-copied) module, so the plan keeps only names
    def _selected(self, name: str) -> bool:
        if _matches(name, self.ignore):
            return False
        return self.layers is None or _matches(name, self.layers)

    def _check_selection(self) -> None:
        module = self.module
        if self.layers:
            for name in self.output_layers:
                if _matches(name, self.layers):
                    raise SlimkitError(f"layer '{name}' produces the model output and cannot be pruned",
                                       "pruning it would change the output size (e.g. the number of classes); "
                                       "remove it from layers")
        units = []
        if "channels" in self.targets:
            units += [n for n in _prunable_names(module) if n not in self.output_layers and self._selected(n)]
        if "heads" in self.targets:
            units += [n for n, _ in _attention_blocks(module) if self._selected(n) or
                      self._selected(f"{n}.query")]
        if "mlp" in self.targets:
            units += [n for n, _ in _ffn_layers(module) if self._selected(n)]
        if not units:
            what = {"channels": "Conv/Linear layers", "heads": "attention blocks (BERT-like query/key/value)",
                    "mlp": "feed-forward blocks (BERT-like intermediate.dense)"}
            found = ", ".join(what[t] for t in self.targets)
            raise SlimkitError(f"target '{'+'.join(self.targets)}' matches nothing to prune in this model "
                               f"(looked for {found}, minus ignored/output layers)",
                               f"layers: {_listing(_prunable_names(module))}")
        self.units = units

    def _importance(self, module):
        if self.importance_name != "activation":
            return make_importance(self.importance_name)
        # the stats were measured on self.module; map them onto this (deep-copied) module by name
        src = {n: m for n, m in self.module.named_modules()}
        dst = dict(module.named_modules())
        stats_in, stats_out = self.stats
        remap_in = {dst[n]: stats_in[m] for n, m in src.items() if m in stats_in}
        remap_out = {dst[n]: stats_out[m] for n, m in src.items() if m in stats_out}
        return ActivationImportance(remap_in, remap_out)

    def apply(self, module: nn.Module, ratio: float) -> list[dict]:
        tp = _tp()
        per_layer: list[dict] = []
        if ratio <= 0:
            return self._unchanged(module)
        importance = self._importance(module)
        if "channels" in self.targets:
            per_layer += self._prune_channels(module, ratio, importance)
        if "heads" in self.targets or "mlp" in self.targets:
            graph = tp.DependencyGraph().build_dependency(module, example_inputs=self.example_inputs)
            if "heads" in self.targets:
                per_layer += self._prune_heads(module, graph, ratio, importance)
            if "mlp" in self.targets:
                per_layer += self._prune_mlp(module, graph, ratio, importance)
        return per_layer

    def _unchanged(self, module) -> list[dict]:
        rows = []
        named = dict(module.named_modules())
        for name in self.units:
            m = named[name]
            if "heads" in self.targets and hasattr(m, "num_attention_heads"):
                rows.append({"layer": name, "unit": "head", "total": m.num_attention_heads,
                             "kept": m.num_attention_heads})
            elif isinstance(m, nn.modules.conv._ConvNd):
                rows.append({"layer": name, "unit": "channel", "total": m.out_channels, "kept": m.out_channels})
            elif isinstance(m, nn.Linear):
                rows.append({"layer": name, "unit": "neuron", "total": m.out_features, "kept": m.out_features})
        return rows

    # ---- channels (CNNs / MLPs): torch-pruning's BasePruner

    def _prune_channels(self, module, ratio, importance) -> list[dict]:
        tp = _tp()
        named = dict(module.named_modules())
        ignored = [m for n, m in named.items() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
                   and (n in self.output_layers or not self._selected(n))]
        before = {n: _out_units(m) for n, m in named.items() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}
        try:
            pruner = tp.pruner.BasePruner(module, self.example_inputs, importance=importance, pruning_ratio=ratio,
                                          ignored_layers=ignored, round_to=self.round_to, global_pruning=False)
            pruner.step()
        except SlimkitError:
            raise
        except Exception as exc:
            raise SlimkitError(f"torch-pruning could not prune this model ({first_line(exc)})",
                               "add the layers around the failing operation to ignore") from exc
        rows = []
        for n, m in module.named_modules():
            if n in before and n in self.units:
                kind = "channel" if isinstance(m, nn.modules.conv._ConvNd) else "neuron"
                rows.append({"layer": n, "unit": kind, "total": before[n], "kept": _out_units(m)})
        return rows

    # ---- attention heads (Hugging Face BERT-like)

    def _prune_heads(self, module, graph, ratio, importance) -> list[dict]:
        tp = _tp()
        rows = []
        for name, attn in _attention_blocks(module):
            if name not in self.units:
                continue
            heads, size = attn.num_attention_heads, attn.attention_head_size
            n_remove = min(heads - 1, int(round(heads * ratio)))
            if n_remove <= 0:
                rows.append({"layer": name, "unit": "head", "total": heads, "kept": heads})
                continue
            full = graph.get_pruning_group(attn.query, tp.prune_linear_out_channels, idxs=list(range(heads * size)))
            _check_group(graph, full, name, {attn.query, attn.key, attn.value})
            imp = importance(full)
            if imp is None:
                raise SlimkitError(f"no importance could be computed for the heads of '{name}'",
                                   "use importance: l2")
            head_imp = imp.view(heads, size).mean(1)
            drop = sorted(torch.argsort(head_imp)[:n_remove].tolist())
            idxs = [h * size + d for h in drop for d in range(size)]
            graph.get_pruning_group(attn.query, tp.prune_linear_out_channels, idxs=idxs).prune()
            attn.num_attention_heads = heads - n_remove
            attn.all_head_size = attn.num_attention_heads * size
            if attn.query.out_features != attn.all_head_size or attn.value.out_features != attn.all_head_size:
                raise SlimkitError(f"head pruning left '{name}' inconsistent (query {attn.query.out_features}, "
                                   f"value {attn.value.out_features}, expected {attn.all_head_size})",
                                   f"add '{name}*' to ignore")
            rows.append({"layer": name, "unit": "head", "total": heads, "kept": attn.num_attention_heads,
                         "pruned": drop})
        return rows

    # ---- feed-forward neurons

    def _prune_mlp(self, module, graph, ratio, importance) -> list[dict]:
        tp = _tp()
        rows = []
        for name, dense in _ffn_layers(module):
            if name not in self.units:
                continue
            total = dense.out_features
            keep = total - int(round(total * ratio))
            if self.round_to:
                keep = max(self.round_to, keep - keep % self.round_to)
            keep = max(1, min(total, keep))
            if keep >= total:
                rows.append({"layer": name, "unit": "neuron", "total": total, "kept": total})
                continue
            full = graph.get_pruning_group(dense, tp.prune_linear_out_channels, idxs=list(range(total)))
            _check_group(graph, full, name, {dense})
            imp = importance(full)
            if imp is None:
                raise SlimkitError(f"no importance could be computed for '{name}'", "use importance: l2")
            drop = sorted(torch.argsort(imp)[: total - keep].tolist())
            graph.get_pruning_group(dense, tp.prune_linear_out_channels, idxs=drop).prune()
            rows.append({"layer": name, "unit": "neuron", "total": total, "kept": dense.out_features})
        return rows


def _out_units(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features


def _check_group(graph, group, name: str, allowed_roots: set) -> None:
    """A head / FFN group must stay inside its block: it must not reach the hidden (residual) width."""
    tp = _tp()
    for dep, _ in group:
        layer = dep.layer
        if dep.pruning_fn in (tp.prune_linear_out_channels, tp.prune_conv_out_channels) and layer not in allowed_roots:
            other = graph._module2name.get(layer, type(layer).__name__)
            raise SlimkitError(f"pruning '{name}' would also remove output units of '{other}' "
                               "(they are coupled through a shape torch-pruning traced together)",
                               f"add '{name}' to ignore")
        if isinstance(layer, (nn.LayerNorm, nn.Embedding)):
            other = graph._module2name.get(layer, type(layer).__name__)
            raise SlimkitError(f"pruning '{name}' would reach '{other}' (the hidden width)",
                               f"add '{name}' to ignore")
