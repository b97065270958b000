"""``weightops demo``: train, watch and compress a small CNN on real handwritten digits.

The practitioner's path through the library, end to end, on the CPU in
seconds and with no download: the 8×8 digits that ship inside scikit-learn
(:func:`sklearn.datasets.load_digits`, 1797 images, 10 classes), split 80/20,
stratified, with a fixed seed.

1. **Train** a small CNN (conv–conv–pool–linear–linear) initialised with
   :func:`weightops.init_` (He) and :func:`weightops.init_bias_prior_` (the
   output bias from the class frequencies), its second convolution
   weight-normalized (:class:`weightops.WeightNorm` through
   :func:`weightops.parametrize`), with AdamW on :func:`weightops.param_groups`
   (no decay on biases), an L1 proximal step on the linear layers
   (:func:`weightops.decay`, which drives small weights to exactly zero ahead
   of pruning) and gradient clipping (:func:`weightops.clip_grads`).
2. **Prune** gradually to :data:`SPARSITY` with fine-tuning
   (:func:`weightops.prune_gradually` on :class:`weightops.Prune` with one
   global threshold, Zhu & Gupta's cubic schedule).
3. **Cluster** each layer's kept weights into :data:`CLUSTERS` shared values,
   one of them a fixed zero (:class:`weightops.Cluster` with
   ``preserve_zero=True``), and fine-tune the codebooks.
4. **Quantize the codebooks** to :data:`CODEBOOK_BITS` bits
   (:class:`weightops.FakeQuantize` / :class:`weightops.QuantizedTensor`).

After each stage the model's test accuracy and the bytes of its stored
compact form are measured. The bytes are counted from real tensors that
decode back to the stage's weights exactly (:meth:`SparseWeight.decode`):
per weight a 1-bit mask of the kept weights
(:func:`weightops.pack_bits`), then either the kept values in float32
(pruned) or their codebook indices packed at ``ceil(log2 k)`` bits plus the
codebook (clustered: float32; quantized: 8-bit codes, a float32 scale and a
uint8 zero point); biases in float32. Only the few integers of each
tensor's shape and format (bits, k) are left out, as
:attr:`weightops.ClusteredTensor.nbytes` leaves them out.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import weightops as wo
from weightops._checks import fail
from weightops._progress import progress as _progress
from weightops.inspection import Report, inspect
from weightops.monitor import WeightMonitor
from weightops.storage import QuantizedTensor, index_bits, pack_bits, unpack_bits
from weightops.transforms.clustering import Cluster

__all__ = ["MISSING_SKLEARN", "DemoResult", "DigitsCNN", "SparseWeight", "Stage", "main", "run"]

#: What the demo says, in one line, when scikit-learn is missing.
MISSING_SKLEARN = 'weightops demo needs scikit-learn: pip install "weightops[demo]"'

#: The train/test split's seed: fixed, so every ``--seed`` is judged on the same test images.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
BATCH_SIZE = 32

#: Training: epochs, AdamW's peak learning rate (cosine-annealed to 0 within
#: each stage), its decoupled weight decay, the L1 proximal rate on the linear
#: layers and the largest total gradient norm.
EPOCHS, LR, WEIGHT_DECAY, L1_RATE, MAX_GRAD_NORM = 20, 2e-3, 1e-4, 5e-3, 1.0
#: Pruning: the final fraction of all weights pruned (one global magnitude
#: threshold), reached after PRUNE_RAMP of the pruning epochs, the rest fine-tuning.
SPARSITY, PRUNE_EPOCHS, PRUNE_LR, PRUNE_RAMP = 0.9, 16, 2e-3, 0.6
#: Clustering: shared values per layer (one of them the fixed zero), and the
#: codebook fine-tuning.
CLUSTERS, CLUSTER_EPOCHS, CLUSTER_LR = 32, 6, 3e-4
#: Bits of each quantized codebook entry.
CODEBOOK_BITS = 8
#: The training log: statistics every MONITOR_EVERY steps, histograms every HISTOGRAM_EPOCHS.
MONITOR_EVERY, HISTOGRAM_EPOCHS = 15, 4


class DigitsCNN(nn.Module):
    """conv(1→16, 3×3) → ReLU → conv(16→32, 3×3) → ReLU → 2×2 max-pool →
    linear(512→128) → ReLU → linear(128→10), for 1×8×8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        logits: Tensor = self.fc2(F.relu(self.fc1(x.flatten(1))))
        return logits


@dataclass(frozen=True)
class SparseWeight:
    """A pruned weight in stored form: a 1-bit mask of the kept weights, then
    either their values or their indices into a codebook.

    Attributes:
        shape: the weight's shape.
        mask: :func:`weightops.pack_bits` ``(weight != 0, 1)``: uint8, one bit a weight.
        values: the kept weights in row-major order (float32), or None when clustered.
        indices: the kept weights' codebook indices packed at ``bits`` bits, or None.
        bits: bits per index, ``ceil(log2 k)`` for a ``k``-entry codebook (0 without one).
        codebook: the nonzero shared values, as float32 or as a
            :class:`~weightops.QuantizedTensor`; None without one.

    >>> w = torch.tensor([[0.0, 1.5, 0.0, -2.0]])
    >>> stored = SparseWeight.from_dense(w)
    >>> stored.nbytes  # one byte of mask bits, two float32 values
    9
    >>> torch.equal(stored.decode(), w)
    True
    """

    shape: torch.Size
    mask: Tensor
    values: Tensor | None = None
    indices: Tensor | None = None
    bits: int = 0
    codebook: Tensor | QuantizedTensor | None = None

    @classmethod
    def from_dense(cls, weight: Tensor) -> SparseWeight:
        """Mask and float32 kept values of ``weight`` (its zeros are the pruned weights)."""
        w = weight.detach().float()
        kept = w != 0
        return cls(w.shape, pack_bits(kept, 1), values=w[kept].clone())

    @classmethod
    def from_clustered(
        cls, cluster: Cluster, codebook: QuantizedTensor | None = None
    ) -> SparseWeight:
        """Mask and codebook indices of a :class:`~weightops.Cluster`'s weight.

        The weights whose shared value is 0 (the fixed zero centroid, or any
        centroid that is 0 now) are the masked ones; the others index the
        codebook's nonzero entries. With ``codebook``, a quantized form of
        those entries (in the same order, one per nonzero entry of the
        cluster's codebook now, as :func:`_quantize_codebooks` makes it), it
        is stored in their place.

        Raises:
            ValueError: ``codebook`` does not hold one value per nonzero
                centroid (the stored form would not decode to the weight).
        """
        packed = cluster.compress()
        values = packed.codebook.detach().float()
        nonzero = values != 0
        index = packed.indices().long()
        kept = nonzero[index]
        # Position among the nonzero entries: the indices skip the zeros.
        remap = torch.cumsum(nonzero, 0) - 1
        k = int(nonzero.sum())
        if codebook is not None and codebook.numel != k:
            fail(
                "SparseWeight.from_clustered",
                "codebook",
                f"one value per nonzero centroid ({k})",
                f"{codebook.numel} values",
            )
        bits = index_bits(max(k, 1))
        return cls(
            packed.shape,
            pack_bits(kept, 1),
            indices=pack_bits(remap[index[kept]], bits),
            bits=bits,
            codebook=values[nonzero] if codebook is None else codebook,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the mask, the values or indices, and the codebook."""
        parts = [self.mask, self.values, self.indices]
        total = sum(t.numel() * t.element_size() for t in parts if t is not None)
        if isinstance(self.codebook, QuantizedTensor):
            total += self.codebook.nbytes
        elif self.codebook is not None:
            total += self.codebook.numel() * self.codebook.element_size()
        return total

    def decode(self) -> Tensor:
        """The float32 weight this form stores."""
        kept = unpack_bits(self.mask, 1, self.shape.numel()).bool()
        if self.values is not None:
            values = self.values
        else:
            assert self.indices is not None and self.codebook is not None
            table = (
                self.codebook.dequantize()
                if isinstance(self.codebook, QuantizedTensor)
                else self.codebook
            )
            index = unpack_bits(self.indices, self.bits, int(kept.sum()))
            values = table[index.long()]
        out = torch.zeros(self.shape.numel(), dtype=torch.float32)
        out[kept] = values.float()
        return out.view(self.shape)


Compact = dict[str, SparseWeight | Tensor]


@dataclass(frozen=True)
class Stage:
    """One row of the demo's table.

    Attributes:
        name: what was done.
        accuracy: test accuracy, in percent.
        nbytes: bytes of the stored form.
        ratio: float32 bytes of the trained model ÷ ``nbytes``.
    """

    name: str
    accuracy: float
    nbytes: int
    ratio: float


@dataclass
class DemoResult:
    """What :func:`run` measured and built.

    Attributes:
        stages: the table's rows, in order: float32, pruned, clustered, quantized.
        table_markdown: the table as Markdown (the README shows it).
        compact: the final stored form: a :class:`SparseWeight` per weight,
            the float32 tensor of every other parameter (biases).
        model: the compressed model (weights live through their ``Cluster``).
        seconds: wall-clock time of the run.
        files: what was written under ``out``.
        sparsity: fraction of the weights pruned, per weight name.
        monitors: the (closed) :class:`~weightops.monitor.WeightMonitor` of
            each training stage, ``"train"``, ``"prune"``, ``"cluster"``: its
            ``records`` without ``out``, its ``path`` with it.
        reports: the :func:`~weightops.inspection.inspect` reports
            ``"before"`` (the trained float32 model) and ``"after"`` compression.
    """

    stages: list[Stage]
    table_markdown: str
    compact: Compact
    model: nn.Module
    seconds: float
    files: list[Path] = field(default_factory=list)
    sparsity: dict[str, float] = field(default_factory=dict)
    monitors: dict[str, WeightMonitor] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)

    @property
    def float_accuracy(self) -> float:
        """Test accuracy of the trained float32 model, in percent."""
        return self.stages[0].accuracy

    @property
    def compressed_accuracy(self) -> float:
        """Test accuracy of the final compressed model, in percent."""
        return self.stages[-1].accuracy

    @property
    def ratio(self) -> float:
        """How many times smaller the final stored form is than the float32 parameters."""
        return self.stages[-1].ratio


@dataclass(frozen=True)
class _Data:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _load_digits() -> _Data:
    """The digits, split 80/20 stratified with :data:`SPLIT_SEED`, standardized
    with the training images' mean and standard deviation."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(MISSING_SKLEARN) from None
    digits = load_digits()
    train, test = train_test_split(
        range(len(digits.target)),
        test_size=TEST_FRACTION,
        stratify=digits.target,
        random_state=SPLIT_SEED,
    )
    x = torch.tensor(digits.data, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    x_train, x_test = x[train], x[test]
    mean, std = x_train.mean(), x_train.std()
    return _Data((x_train - mean) / std, y[train], (x_test - mean) / std, y[test])


def _batches(
    data: _Data, epochs: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled mini-batches of the training split, ``epochs`` times over."""
    n = len(data.y_train)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            yield data.x_train[idx], data.y_train[idx]


def _steps(data: _Data, epochs: int) -> int:
    return epochs * math.ceil(len(data.y_train) / BATCH_SIZE)


@torch.no_grad()
def _accuracy(model: nn.Module, data: _Data) -> float:
    """Test accuracy in percent, in eval mode (training mode restored)."""
    was_training = model.training
    model.eval()
    correct = int((model(data.x_test).argmax(1) == data.y_test).sum())
    model.train(was_training)
    return 100.0 * correct / len(data.y_test)


def _weights(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter by name, parametrized ones as their effective value."""
    out: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if "parametrizations" in name.split("."):
            continue  # the stored tensors and the transforms' state
        for attr in ("weight", "bias"):
            value = getattr(module, attr, None)
            if isinstance(value, Tensor):
                out[f"{name}.{attr}" if name else attr] = value.detach()
    return out


def _nbytes(compact: Compact) -> int:
    return sum(
        v.nbytes if isinstance(v, SparseWeight) else v.numel() * v.element_size()
        for v in compact.values()
    )


def _compact(model: nn.Module, weights: dict[str, SparseWeight]) -> Compact:
    """``weights`` plus every other parameter (the biases) in float32."""
    compact: Compact = {}
    for name, value in _weights(model).items():
        compact[name] = weights[name] if name in weights else value.float().clone()
    return compact


def _sparse(model: nn.Module) -> dict[str, SparseWeight]:
    """The masked form of each weight of a model (its zeros pruned)."""
    return {
        name: SparseWeight.from_dense(value)
        for name, value in _weights(model).items()
        if value.ndim >= 2
    }


def _clustered(
    clusters: dict[str, Cluster], quantized: dict[str, QuantizedTensor] | None = None
) -> dict[str, SparseWeight]:
    return {
        name: SparseWeight.from_clustered(c, None if quantized is None else quantized[name])
        for name, c in clusters.items()
    }


@torch.no_grad()
def _quantize_codebooks(clusters: dict[str, Cluster], bits: int) -> dict[str, QuantizedTensor]:
    """Quantize each codebook's nonzero entries to ``bits`` bits (min-max, 0
    exact) and make the model use the quantized values.

    A nonzero centroid may quantize to exactly 0: its weights become zeros
    of the model, so they join the mask, and its code is dropped from the
    stored codebook, which then holds one code per centroid that is still
    nonzero, in order, as :meth:`SparseWeight.from_clustered` indexes them.
    """
    quantizer = wo.FakeQuantize(bits)
    out: dict[str, QuantizedTensor] = {}
    for name, cluster in clusters.items():
        values = cluster.compress().codebook
        nonzero = values != 0
        coded = quantizer.compress(values[nonzero])
        dequantized = coded.dequantize().to(values.dtype)
        codebook = cluster.codebook
        assert codebook is not None  # set up by parametrize
        codebook[nonzero] = dequantized
        still = dequantized != 0
        if not bool(still.all()):
            # Same scale and zero point (per tensor): only the codes of the
            # centroids still nonzero are kept.
            codes = unpack_bits(coded.packed, coded.bits, coded.numel)[still]
            coded = QuantizedTensor(
                pack_bits(codes, coded.bits),
                coded.scale,
                coded.zero_point,
                shape=(codes.numel(),),
                dtype=coded.dtype,
                bits=coded.bits,
                symmetric=coded.symmetric,
                axis=coded.axis,
                group_size=coded.group_size,
                preserve_zero=coded.preserve_zero,
            )
        out[name] = coded
    return out


def _markdown(stages: list[Stage]) -> str:
    lines = [
        "| stage | test accuracy | bytes | smaller than float32 |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {s.name} | {s.accuracy:.2f}% | {s.nbytes:,} | {s.ratio:.1f}× |" for s in stages]
    return "\n".join(lines)


class _Session:
    """One run's data, random stream, output directory and what it collects."""

    def __init__(self, data: _Data, seed: int, out: Path | None, show: bool) -> None:
        self.data = data
        self.generator = torch.Generator().manual_seed(seed)
        self.out = out
        self.show = show
        self.files: list[Path] = []
        self.monitors: dict[str, WeightMonitor] = {}
        self.reports: dict[str, Report] = {}

    def fit(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int, stage: str
    ) -> None:
        """Minimise the cross-entropy, the learning rate cosine-annealed to 0,
        watched by a :class:`~weightops.monitor.WeightMonitor` (``monitor_<stage>.jsonl``
        under ``out``, else its in-memory ``records``)."""
        data = self.data
        total = _steps(data, epochs)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
        path = None if self.out is None else self.out / f"monitor_{stage}.jsonl"
        if path is not None:
            path.unlink(missing_ok=True)  # a fresh log, not appended to an earlier run's
        monitor = WeightMonitor(
            model, path, every=MONITOR_EVERY, histogram_every=_steps(data, HISTOGRAM_EPOCHS)
        )
        self.monitors[stage] = monitor
        with monitor:
            monitor.attach(optimizer)
            model.train()
            batches = _batches(data, epochs, self.generator)
            for x, y in _progress(batches, total=total, desc=stage, enable=self.show):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
        if path is not None:
            self.files.append(path)

    def report(self, model: nn.Module, when: str) -> None:
        """Inspect ``model`` (with the test images as the example input); under
        ``out``, write ``report_<when>.md``/``.json`` and the plots in ``<when>/``."""
        report = inspect(model, example_input=self.data.x_test)
        self.reports[when] = report
        if self.out is None:
            return
        for suffix, text in (("md", report.to_markdown()), ("json", report.to_json())):
            path = self.out / f"report_{when}.{suffix}"
            path.write_text(text, encoding="utf-8")
            self.files.append(path)
        try:
            # Now, while the model still holds the weights the report describes:
            # the report re-reads each tensor from it to plot.
            self.files += report.plot(self.out / when)
        except ImportError as error:
            print(f"{when} plots skipped: {error}")


def run(*, out: str | Path | None = None, seed: int = 0, progress: bool = True) -> DemoResult:
    """Train, prune, cluster and quantize a CNN on the digits; print the table.

    The run uses one CPU thread (restored afterwards): on tensors this small
    that is the fastest, and it gives the same numbers on any number of cores.

    Args:
        out: a directory (created if missing) for the training logs
            (``monitor_<stage>.jsonl``), the inspection reports before and
            after compression (``report_before.md``/``.json``,
            ``report_after.*``) and their plots (``before/``, ``after/``,
            when matplotlib is installed); None writes nothing.
        seed: seeds every generator (:func:`weightops.seed_everything`) for
            the model's initialisation and the batch order, an int in
            ``[0, 2**32)``; the train/test split is fixed (:data:`SPLIT_SEED`).
            The global random state is restored afterwards.
        progress: show progress bars on stderr while training.

    Returns:
        The stages' accuracies and bytes, the table, the compact form, the
        compressed model, the monitors and the reports.

    Raises:
        ImportError: scikit-learn is missing (the message, one line, names the extra).
        TypeError/ValueError: ``seed`` is not an int in ``[0, 2**32)``.
    """
    op = "demo.run"
    if isinstance(seed, bool) or not isinstance(seed, int):
        fail(op, "seed", "an int in [0, 2**32)", seed, TypeError)
    if not 0 <= seed < 2**32:
        fail(op, "seed", "an int in [0, 2**32)", seed)
    start = time.perf_counter()
    data = _load_digits()
    directory = None if out is None else Path(out)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    state = wo.seed_everything(seed)
    try:
        torch.set_num_threads(1)
        session = _Session(data, seed, directory, progress)
        result = _pipeline(session)
    finally:
        torch.set_num_threads(threads)
        state.restore()
    result.seconds = time.perf_counter() - start
    print(result.table_markdown)
    change = result.compressed_accuracy - result.float_accuracy
    print(
        f"\nThe compressed model is {result.ratio:.1f}× smaller than its float32 parameters "
        f"({result.stages[-1].nbytes:,} bytes), test accuracy {result.compressed_accuracy:.2f}% "
        f"({change:+.2f} points); {result.seconds:.1f} s."
    )
    if directory is not None:
        print(f"Reports, plots and training logs: {len(result.files)} files in {directory}")
    return result


def _pipeline(session: _Session) -> DemoResult:
    data, generator = session.data, session.generator

    model = DigitsCNN()
    wo.init_(model, "he_normal", generator=generator)
    frequencies = torch.bincount(data.y_train, minlength=10).float() / len(data.y_train)
    wo.init_bias_prior_(model.fc2, frequencies, kind="softmax")
    wo.parametrize(model, wo.WeightNorm(), where="conv2.weight")
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        wo.param_groups(model, WEIGHT_DECAY), lr=LR
    )
    wo.clip_grads(optimizer, max_norm=MAX_GRAD_NORM)
    wo.decay(optimizer, L1_RATE, penalty="l1", model=model, where=nn.Linear)
    session.fit(model, optimizer, EPOCHS, "train")
    # The weight-normalized layer becomes a plain weight: what is stored and compressed.
    wo.unparametrize(model, bake=True)
    session.report(model, "before")
    float_bytes = sum(p.numel() * 4 for p in model.parameters())

    stages: list[Stage] = []

    def record(name: str, compact: Compact) -> None:
        nbytes = _nbytes(compact)
        stages.append(Stage(name, _accuracy(model, data), nbytes, float_bytes / nbytes))

    record("float32, trained", {k: v.float() for k, v in _weights(model).items()})

    wo.parametrize(model, wo.Prune(0.0, scope="global"))
    optimizer = torch.optim.AdamW(wo.param_groups(model, WEIGHT_DECAY), lr=PRUNE_LR)
    wo.clip_grads(optimizer, max_norm=MAX_GRAD_NORM)
    wo.prune_gradually(
        optimizer,
        model,
        SPARSITY,
        end=max(1, int(PRUNE_RAMP * _steps(data, PRUNE_EPOCHS))),
        every=max(1, _steps(data, 1) // 2),
    )
    session.fit(model, optimizer, PRUNE_EPOCHS, "prune")
    record(f"pruned to {SPARSITY:.0%}, fine-tuned", _compact(model, _sparse(model)))
    wo.unparametrize(model, bake=True)

    clusters = {
        name: cast(Cluster, c)
        for name, c in wo.parametrize(model, wo.Cluster(CLUSTERS, preserve_zero=True)).items()
    }
    # The stored weights get no gradient through a Cluster: the codebooks and biases train.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=CLUSTER_LR)
    session.fit(model, optimizer, CLUSTER_EPOCHS, "cluster")
    record(
        f"clustered, {CLUSTERS} shared values a layer, codebooks fine-tuned",
        _compact(model, _clustered(clusters)),
    )

    quantized = _quantize_codebooks(clusters, CODEBOOK_BITS)
    final = _compact(model, _clustered(clusters, quantized))
    record(f"codebooks quantized to {CODEBOOK_BITS} bits", final)
    session.report(model, "after")

    sparsity = {
        name: float((value == 0).double().mean())
        for name, value in _weights(model).items()
        if value.ndim >= 2
    }
    return DemoResult(
        stages=stages,
        table_markdown=_markdown(stages),
        compact=final,
        model=model,
        seconds=0.0,
        files=session.files,
        sparsity=sparsity,
        monitors=session.monitors,
        reports=session.reports,
    )


def main(*, out: str | Path | None = None, seed: int = 0, progress: bool = True) -> int:
    """``weightops demo [--out DIR] [--seed N]``: :func:`run`, with an exit status.

    Returns:
        0; 1 after printing :data:`MISSING_SKLEARN` to stderr when scikit-learn
        is missing; 2 after a one-line error when ``seed`` is outside
        ``[0, 2**32)`` or ``out`` is an existing file (nothing is run then).
    """
    if not 0 <= seed < 2**32:
        print(f"weightops demo: --seed must be an int in [0, 2**32), got {seed}", file=sys.stderr)
        return 2
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        print(f"weightops demo: --out must be a directory, got the file {out}", file=sys.stderr)
        return 2
    try:
        run(out=out, seed=seed, progress=progress)
    except ImportError as error:
        if str(error) != MISSING_SKLEARN:
            raise
        print(error, file=sys.stderr)
        return 1
    return 0
