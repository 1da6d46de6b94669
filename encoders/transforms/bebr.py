"""Learned binary codes: recurrent binarization (Tencent's BEBR), trained embedding-to-embedding on the stored vectors.

Step l codes what the earlier steps left, r_l = x - μ - Σ_{j<l} D_j s_j, as ``code_bits`` signs
s_l = sign(P_l^T (r_l + W2_l gelu(W1_l^T r_l + c_l))): a small residual MLP, then a projection to the code
length (which may differ from the model dimension). The decoder is linear per step, x̂ = μ + Σ_l D_l s_l, so
scoring stays what it is for sign codes (encoders/transforms/binary.py): q·x̂ = q·μ + Σ_l (D_l q)·s_l, one matmul
per bit plane against the raw bits, and the code layout, the FAISS Hamming plane and the rescoring are shared.

Training is greedy, one step at a time, on a seeded sample (``max_samples`` rows, HELD_SHARE of them held out), with
straight-through gradients through the signs (tanh backward). The loss keeps each batch's neighbour
distributions (every vector a query over the other rows, softmax at ``TEMPERATURE``) under the reconstruction,
plus the reconstruction error |x - x̂|². The epoch kept (early stopping after ``patience`` epochs without a
better one) is the one whose codes give the held vectors, each a query over the other held vectors, the best
recall of their exact top-10 among HELD_OVERSAMPLE x 10 candidates: the retrieval measure itself, on codes the
step never trained on. A lower loss does not by itself rank better, and neither does recall over the training
rows: on WordNet (192-bit codes, 9k training rows) it rose from 0.931 to 0.934 while the recall of lemma
queries over the whole corpus at oversample 16 fell from 0.947 to 0.928, as it did over any rows not trained on.
Where the fit is given query samples (at least MIN_SELECTING_QUERIES), they replace the held vectors as the
queries of that measure: queries unlike the documents (WordNet's lemmas against its glosses) are where a step
that codes documents better can rank worse, and they are what the codes will serve. The initialisation competes: a full-length step starts as the sign code of its residual (P = I, the MLP's output
zero, D the sign code's per-dimension scale), a shorter one as a random rotation of the top principal directions
(balanced bits, as in ITQ), of the documents' residual or, given query samples, of it and the queries together.
A start or an epoch replaces the one kept only when it beats it by SIGNIFICANCE standard errors of the per-query
difference: on WordNet no epoch of training did, and gains within the probe's noise had cost lemma queries a
third more candidates. Torch uses the thread count the process set (the server's).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from encoders.errors import InvalidInput
from encoders.transforms.binary import MAX_BITS, BinaryQuantizer
from encoders.transforms.common import as_matrix, to_torch
from encoders.transforms.quantizer import pack_bits

DEFAULT_LEARNED_SAMPLES = 10_000
HELD_SHARE = 0.3  # of the sample: the held vectors search each other, so they must be many for the measure to rank finely
BATCH = 512
HELD_OVERSAMPLE = 4  # held queries' candidates, as a multiple of 10, whose recall of the exact top-10 picks the epoch
TEMPERATURE = 0.05  # of the neighbour distributions the loss keeps: sharp enough that the nearest rows dominate
MAX_CODE_BITS_PER_DIM = 4
SIGNIFICANCE = 2.0  # standard errors by which a start or an epoch must beat the one kept
MIN_SELECTING_QUERIES = 20  # query samples that replace the held vectors as the queries choosing each step's epoch

_STEP_TENSORS = ("w1", "c1", "w2", "proj", "decoders")
_EXCLUDED = -1e4  # a score no softmax gives weight to (finite: no NaN gradients as with -inf)


def _straight_through_signs(z: torch.Tensor) -> torch.Tensor:
    """±1 forward, tanh's gradient backward."""
    soft = torch.tanh(z)
    return soft + (torch.where(z > 0, 1.0, -1.0) - soft).detach()


class _Step(torch.nn.Module):
    """One binarization step: residual MLP, projection to code bits, linear decoder."""

    def __init__(self, residual: torch.Tensor, projection: torch.Tensor, hidden: int, generator: torch.Generator):
        super().__init__()
        d = residual.shape[1]
        self.w1 = torch.nn.Parameter(torch.randn(d, hidden, generator=generator) / d**0.5)
        self.c1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = torch.nn.Parameter(torch.zeros(hidden, d))
        self.proj = torch.nn.Parameter(projection)
        # Each bit's least-squares scale along its own direction: at full length, the sign code's per-dimension scale.
        self.decoders = torch.nn.Parameter((residual @ self.proj).abs().mean(dim=0)[:, None] * self.proj.detach().T)

    def logits(self, r: torch.Tensor) -> torch.Tensor:
        return (r + torch.nn.functional.gelu(r @ self.w1 + self.c1) @ self.w2) @ self.proj

    def signs(self, r: torch.Tensor) -> torch.Tensor:
        return torch.where(self.logits(r) > 0, 1.0, -1.0)

    def loss(self, r: torch.Tensor, queries: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's neighbour distributions (each vector a query over the batch) kept, plus the reconstruction."""
        error = r - _straight_through_signs(self.logits(r)) @ self.decoders
        approx = target - queries @ error.T  # q_i·x̂_j for every query and batch row, from the exact scores
        # A row is not its own neighbour: its self-score would dominate both distributions.
        own = torch.eye(len(r), dtype=torch.bool)
        exact, approx = (t.masked_fill(own, _EXCLUDED) / TEMPERATURE for t in (target, approx))
        kl = (exact.softmax(dim=1) * (exact.log_softmax(dim=1) - approx.log_softmax(dim=1))).sum(dim=1).mean()
        return kl + error.pow(2).sum(dim=1).mean()


class _Probe:
    """The measure that picks each step's epoch: recall of exact top-10s over the held vectors, whose codes no step
    trained on, among HELD_OVERSAMPLE x 10 candidates; the queries are the given samples, else the held vectors
    themselves (each over the others)."""

    def __init__(self, held: torch.Tensor, queries: torch.Tensor | None):
        self.samples = None if queries is None else queries.to(held.device, torch.float32)
        self.queries = held if self.samples is None else self.samples
        own = self.samples is None
        self.description = "held vectors, each a query over the others" if own else f"{len(self.queries)} query samples over the held vectors"
        self.searched = len(held) - 1 if own else len(held)
        self.truth = torch.topk(self._scores(held), min(10, max(self.searched, 0)), dim=1).indices

    def _scores(self, rows: torch.Tensor) -> torch.Tensor:
        scores = self.queries @ rows.T
        return scores.fill_diagonal_(float("-inf")) if self.samples is None else scores

    def recalls(self, approx: torch.Tensor) -> torch.Tensor:
        """Each query's recall of its exact top-10 among the candidates of ``approx`` (the held vectors' codes)."""
        if not self.truth.numel():  # too few held vectors: every epoch scores alike and the initialisation is kept
            return torch.zeros(len(self.queries))
        found = torch.topk(self._scores(approx), min(HELD_OVERSAMPLE * self.truth.shape[1], self.searched), dim=1).indices
        return (found[:, :, None] == self.truth[:, None, :]).any(dim=1).float().mean(dim=1)


def _beats(new: torch.Tensor, old: torch.Tensor) -> bool:
    """Whether per-query recalls ``new`` beat ``old`` by more than SIGNIFICANCE standard errors of the mean paired
    difference: a tie, or a gain the probe's own noise explains, keeps what is there. On WordNet (192 bits) an
    epoch 0.0005 better on the held measure needed 22.9 candidates' oversample for lemma queries against 16.0."""
    difference = new - old
    if len(difference) < 2:
        return False
    gain = float(difference.mean())
    return gain > 0 and gain > SIGNIFICANCE * float(difference.std()) / len(difference) ** 0.5


def _mean(recalls: torch.Tensor) -> float:
    return round(float(recalls.mean()), 4) if len(recalls) else 0.0


def _initial_projections(residual: torch.Tensor, code_bits: int, generator: torch.Generator, queries: torch.Tensor | None) -> list[tuple[str, torch.Tensor]]:
    """Named starting points (d, code_bits) that compete, the documents' own first: the identity at full length (the sign code); longer, the identity
    and random unit directions after it; shorter, a random rotation (balanced bits, as in ITQ) of the top principal
    directions of the residual and, given query samples, of the residual's and the queries' second moments at equal
    weight: directions the queries use but the documents vary little along count, as in LeanVec-OOD (on WordNet,
    192 bits: oversample for recall@10 0.95 of lemma queries 17.1 -> 14.4 with 75 samples, 14.3 with 1,000)."""
    d = residual.shape[1]
    if code_bits == d:
        return [("the sign code", torch.eye(d))]
    if code_bits > d:
        extra = torch.randn(d, code_bits - d, generator=generator)
        return [("the sign code and random directions", torch.cat([torch.eye(d), extra / extra.norm(dim=0)], dim=1))]
    centred = residual - residual.mean(dim=0)
    documents = centred.T @ centred / len(centred)
    moments = [("documents' principal directions", documents)]
    if queries is not None:
        asked = queries.T @ queries
        moments.append(("documents' and queries' principal directions", documents / documents.trace() + asked / asked.trace()))
    rotation, _ = torch.linalg.qr(torch.randn(code_bits, code_bits, generator=generator))
    return [(name, _top_directions(moment, code_bits) @ rotation) for name, moment in moments]


def _top_directions(moment: torch.Tensor, count: int) -> torch.Tensor:
    """(d, count): the eigenvectors of a symmetric matrix with the largest eigenvalues."""
    values, vectors = torch.linalg.eigh(moment)
    return vectors[:, torch.argsort(values, descending=True)[:count]]


class LearnedBinaryQuantizer(BinaryQuantizer):
    """``bits`` learned binarization steps of ``code_bits`` bits each (default: one per model dimension)."""

    kind = "bebr"

    def __init__(
        self,
        bits: int = 1,
        code_bits: int | None = None,
        hidden: int = 64,
        epochs: int = 4,
        patience: int = 2,
        learning_rate: float = 1e-4,
        max_samples: int = DEFAULT_LEARNED_SAMPLES,
        seed: int = 0,
        provenance: dict[str, Any] | None = None,
    ):
        if code_bits is not None and (code_bits < 8 or code_bits % 8):
            raise InvalidInput("learned binary codes need code_bits a positive multiple of 8", code="invalid_transform")
        if not 1 <= bits <= MAX_BITS or hidden < 1 or epochs < 1 or patience < 1 or learning_rate <= 0:
            raise InvalidInput(f"learned binary codes need bits in 1..{MAX_BITS} and positive hidden, epochs, patience, learning_rate", code="invalid_transform")
        super().__init__(bits, "dimension", max_samples, seed, provenance)
        self.code_bits, self.hidden, self.epochs, self.patience, self.learning_rate = code_bits, hidden, epochs, patience, learning_rate
        self._selecting: torch.Tensor | None = None  # the query samples of the fit in progress, if enough were given

    def expected_tensors(self) -> set[str]:
        return {"mean", *_STEP_TENSORS}

    @property
    def plane_bits(self) -> int:
        return int(self.tensor("decoders").shape[1])

    @property
    def label(self) -> str:
        return f"learned-binary{self.bits}x{self.plane_bits}"

    # ---- training ----------------------------------------------------------------------------

    def _fit(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        d = sample.shape[1]
        code_bits = self.code_bits or d
        if code_bits > MAX_CODE_BITS_PER_DIM * d:
            raise InvalidInput(f"code_bits must be at most {MAX_CODE_BITS_PER_DIM} x the input width {d}", code="invalid_transform")
        started, device = time.perf_counter(), sample.device
        generator = torch.Generator().manual_seed(self.seed)
        sample = sample.cpu()
        order = torch.randperm(len(sample), generator=generator)
        held_count = max(2, int(len(sample) * HELD_SHARE)) if len(sample) > 2 else 0
        held, train = sample[order[:held_count]], sample[order[held_count:]]
        mean = train.mean(dim=0)
        probe = _Probe(held, self._selecting)
        residual, held_residual, steps, history = train - mean, held - mean, [], []
        for _ in range(self.bits):
            step, record = self._train_step(residual, train, held, held_residual, probe, code_bits, generator)
            steps.append(step)
            history.append(record)
            with torch.no_grad():
                residual = residual - step.signs(residual) @ step.decoders
                held_residual = held_residual - step.signs(held_residual) @ step.decoders
        self.code_bits = code_bits
        self._training = {
            "steps": history,
            "train_rows": len(train),
            "held_rows": held_count,
            "epochs_chosen_by": probe.description,
            "seconds": round(time.perf_counter() - started, 2),
        }
        stacked = {name: torch.stack([getattr(s, name).detach() for s in steps]) for name in _STEP_TENSORS}
        return {name: t.to(device) for name, t in {"mean": mean, **stacked}.items()}

    def _train_step(
        self,
        residual: torch.Tensor,
        train: torch.Tensor,
        held: torch.Tensor,
        held_residual: torch.Tensor,
        probe: _Probe,
        code_bits: int,
        generator: torch.Generator,
    ) -> tuple[_Step, dict[str, Any]]:
        """One step trained on the training rows' residual; the epoch kept is the one whose codes (with the earlier
        steps') give the probe's queries over the held vectors the best recall of their exact top-10 among
        HELD_OVERSAMPLE x 10 candidates; the initialisations (for a full-length step, the sign code) compete too."""

        def held_recalls(step: _Step) -> torch.Tensor:
            with torch.no_grad():
                return probe.recalls(held - held_residual + step.signs(held_residual) @ step.decoders)

        named = _initial_projections(residual, code_bits, generator, probe.samples)
        starts = [_Step(residual, p, self.hidden, generator) for _, p in named]
        start_recalls = [held_recalls(s) for s in starts]
        chosen = 0  # the documents' own start, unless another beats it
        for i in range(1, len(starts)):
            chosen = i if _beats(start_recalls[i], start_recalls[chosen]) else chosen
        step = starts[chosen]
        optimiser = torch.optim.Adam(step.parameters(), lr=self.learning_rate)
        best, best_state, epochs, stale = start_recalls[chosen], {k: v.clone() for k, v in step.state_dict().items()}, 0, 0
        initial = best
        while epochs < self.epochs and stale < self.patience:
            for batch in torch.randperm(len(residual), generator=generator).split(BATCH):
                optimiser.zero_grad()
                step.loss(residual[batch], train[batch], train[batch] @ train[batch].T).backward()
                optimiser.step()
            epochs += 1
            recalls = held_recalls(step)
            if _beats(recalls, best):
                best, best_state, stale = recalls, {k: v.clone() for k, v in step.state_dict().items()}, 0
            else:
                stale += 1
        step.load_state_dict(best_state)
        record = {"epochs": epochs, "held_recall_initial": _mean(initial), "held_recall": _mean(best)}
        return step, record | ({"started_from": named[chosen][0], "start_recalls": [_mean(r) for r in start_recalls]} if len(starts) > 1 else {})

    def fit(self, docs: Any, queries: Any = None) -> LearnedBinaryQuantizer:
        """Learns from a sample of ``docs``; ``queries`` (samples, optional) choose each step's epoch."""
        given = None if queries is None else to_torch(as_matrix(queries, what="queries"))
        self._selecting = given if given is not None and len(given) >= MIN_SELECTING_QUERIES else None
        try:
            super().fit(docs, queries)
        finally:
            self._selecting = None
        assert self.provenance is not None
        self.provenance["training"] = self._training
        return self

    # ---- coding and scoring --------------------------------------------------------------------

    def _logits(self, level: int, r: torch.Tensor) -> torch.Tensor:
        w1, c1, w2, proj = (self.tensor(name)[level] for name in ("w1", "c1", "w2", "proj"))
        return (r + torch.nn.functional.gelu(r @ w1 + c1) @ w2) @ proj

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        r, planes = x - self.tensor("mean"), []
        for level in range(self.bits):
            bits = self._logits(level, r) > 0
            planes.append(pack_bits(bits))
            r = r - torch.where(bits, 1.0, -1.0) @ self.tensor("decoders")[level]
        return torch.cat(planes, dim=1)

    def _first_plane(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(0, x - self.tensor("mean")) > 0

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        planes, _ = self._split(codes)
        x = self.tensor("mean").expand(*codes.shape[:-1], self.input_dim).clone()
        for bits, decoder in zip(planes, self.tensor("decoders"), strict=True):
            x += (2 * bits.float() - 1) @ decoder
        return x

    def _prepare(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        weighted = torch.einsum("md,lcd->mlc", q, self.tensor("decoders"))  # (m, bits, code_bits): D_l q
        return weighted, weighted.sum(dim=-1), q @ self.tensor("mean")[:, None]

    def config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "code_bits": self.code_bits,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "patience": self.patience,
            "learning_rate": self.learning_rate,
            "max_samples": self.max_samples,
            "seed": self.seed,
            "provenance": self.provenance,
        }
