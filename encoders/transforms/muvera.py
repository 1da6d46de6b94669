"""MUVERA fixed-dimensional encodings (FDE): one vector per token set whose inner products approximate Chamfer.

Follows Google's reference (graph-mining, sketching/point_cloud/fixed_dimensional_encoding.cc) and the
paper (Dhulipala et al., 2024, "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings"). Per
repetition, k_sim Gaussian SimHash sign bits put each token in one of 2^k_sim partitions (Gray-code ids);
the token is projected to d_proj dimensions (identity, a sparse AMS sketch, or a dense +-1/sqrt(d_proj)
matrix) and added to its partition's block. Documents average each block and fill empty blocks with the
token whose sign bits disagree least with the partition's; queries sum and, as in the reference, do not fill
(``query_fill_empty_partitions`` fills them the same way, an option the benchmark tunes). Repetitions are
concatenated, then optionally Count-Sketched down to final_projection_dimension.

All tokens of a batch are processed at once (ragged, concatenated, with an owner index per token): no
per-document Python loop, and no padding to waste memory on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch

from encoders.device import torch_device
from encoders.errors import InvalidInput
from encoders.transforms.base import Transform
from encoders.transforms.chamfer import as_token_sets

ProjectionType = Literal["identity", "ams", "dense"]

# The reference packs partition ids into 32-bit integers.
MAX_SIMHASH_PROJECTIONS = 30
# Raw (pre Count-Sketch) FDE size cap: 2^24 floats is 64 MiB per vector, past any useful setting
# (the paper's largest is 20 x 2^6 x 128 ~ 164k) and small enough that a typo cannot exhaust memory.
MAX_RAW_DIMENSION = 1 << 24
# float32-sized elements of one batch's intermediates (see _batches); 2^24 is 64 MiB, modest on a shared
# CPU host while still batching thousands of tokens per pass.
_BATCH_ELEMENTS = 1 << 24

# Independent random streams per repetition, derived from (seed, repetition, stream).
_SIMHASH, _PROJECTION, _COUNT_SKETCH = 0, 1, 2


def partition_index(bits: torch.Tensor) -> torch.Tensor:
    """Partition ids (int64) from SimHash sign bits (..., k) bool, the first bit most significant.

    The reference appends each bit b to the id g as (g << 1) + (b ^ (g & 1)): every new low bit is the
    xor of all sign bits so far, so the id is the prefix xor of the bits, i.e. the Gray *decoding* of the
    sign pattern read as a binary number. Neighbouring ids thus differ in exactly one sign bit.
    """
    k = bits.shape[-1]
    prefix_xor = torch.cumsum(bits.to(torch.int64), dim=-1) & 1
    weights = 1 << torch.arange(k - 1, -1, -1, device=bits.device)
    return (prefix_xor * weights).sum(dim=-1)


def partition_bits(index: torch.Tensor, k: int) -> torch.Tensor:
    """The sign bits (..., k) bool, first bit most significant, that ``partition_index`` maps to ``index``.

    Undoing a prefix xor is the Gray *encoding* index ^ (index >> 1) (the reference's GrayCodeToBinary).
    Applying a full Gray-to-binary decoding here instead recovers the wrong bits, and empty partitions
    would then be filled from the wrong tokens.
    """
    gray = index ^ (index >> 1)
    shifts = torch.arange(k - 1, -1, -1, device=index.device)
    return ((gray[..., None] >> shifts) & 1).bool()


def _stream_seed(seed: int, repetition: int, stream: int) -> int:
    return int(np.random.SeedSequence((seed, repetition, stream)).generate_state(1, dtype=np.uint64)[0])


def _generator(seed: int, repetition: int, stream: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(_stream_seed(seed, repetition, stream))


def _random_signs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float().mul_(2).sub_(1)


def _check_int(name: str, value: Any, minimum: int, code: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{name} must be an integer >= {minimum}, got {value!r}", code=code, details={name: value})
    return value


class MuveraFDE(Transform):
    """Fixed-dimensional encodings of token sets (lists of (n_i, d) float32 arrays) into (batch, output_dim) float32.

    ``dimension`` may be left out and recorded by ``fit``; the random matrices are drawn once it is known
    and persisted in ``state()``, so a loaded transform encodes exactly like the saved one.
    """

    kind = "muvera"

    def __init__(
        self,
        dimension: int | None = None,
        num_repetitions: int = 20,
        num_simhash_projections: int = 5,
        projection_type: ProjectionType = "identity",
        projection_dimension: int | None = None,
        fill_empty_partitions: bool = True,
        final_projection_dimension: int | None = None,
        seed: int = 1,
        query_fill_empty_partitions: bool = False,
    ):
        self.dimension = None if dimension is None else _check_int("dimension", dimension, 1, "invalid_dimension")
        self.num_repetitions = _check_int("num_repetitions", num_repetitions, 1, "invalid_num_repetitions")
        self.num_simhash_projections = _check_int("num_simhash_projections", num_simhash_projections, 0, "invalid_num_simhash_projections")
        if num_simhash_projections > MAX_SIMHASH_PROJECTIONS:
            raise InvalidInput(
                f"num_simhash_projections must be < 31 (2^k_sim partitions), got {num_simhash_projections}",
                code="invalid_num_simhash_projections",
                details={"num_simhash_projections": num_simhash_projections, "max": MAX_SIMHASH_PROJECTIONS},
            )
        if projection_type not in get_args(ProjectionType):
            raise InvalidInput(
                f"projection_type must be one of {', '.join(get_args(ProjectionType))}, got {projection_type!r}",
                code="invalid_projection_type",
                details={"projection_type": projection_type},
            )
        self.projection_type: ProjectionType = projection_type
        if projection_dimension is not None:
            _check_int("projection_dimension", projection_dimension, 1, "invalid_projection_dimension")
        elif projection_type != "identity":
            raise InvalidInput(
                f"projection_dimension is required with projection_type {projection_type!r}",
                code="invalid_projection_dimension",
            )
        self.projection_dimension = projection_dimension
        for name, flag in (("fill_empty_partitions", fill_empty_partitions), ("query_fill_empty_partitions", query_fill_empty_partitions)):
            if not isinstance(flag, bool):
                raise InvalidInput(f"{name} must be a boolean", code=f"invalid_{name}")
        self.fill_empty_partitions = fill_empty_partitions
        self.query_fill_empty_partitions = query_fill_empty_partitions
        self.final_projection_dimension = (
            None
            if final_projection_dimension is None
            else _check_int("final_projection_dimension", final_projection_dimension, 1, "invalid_final_projection_dimension")
        )
        self.seed = _check_int("seed", seed, 0, "invalid_seed")
        # Drawn lazily from the seed on first use, so loading saved weights never pays for a draw it discards.
        self._state: dict[str, torch.Tensor] | None = None
        self._on_device: tuple[torch.device, dict[str, torch.Tensor]] | None = None
        if self.dimension is not None:
            self._check_dimension_dependent()

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def num_partitions(self) -> int:
        return 1 << self.num_simhash_projections

    @property
    def block_dimension(self) -> int:
        """d_proj: the size of one partition's block."""
        if self.projection_type == "identity":
            return self._require_dimension()
        assert self.projection_dimension is not None  # enforced in __init__
        return self.projection_dimension

    @property
    def raw_dimension(self) -> int:
        """R * 2^k_sim * d_proj: the FDE size before the optional final Count-Sketch."""
        return self.num_repetitions * self.num_partitions * self.block_dimension

    @property
    def output_dim(self) -> int:
        return self.final_projection_dimension or self.raw_dimension

    def _require_dimension(self) -> int:
        if self.dimension is None:
            raise InvalidInput("the muvera transform has no input dimension yet: pass dimension or fit it", code="not_fitted")
        return self.dimension

    def _check_dimension_dependent(self) -> None:
        d = self._require_dimension()
        if self.projection_dimension is not None and self.projection_dimension > d:
            raise InvalidInput(
                f"projection_dimension {self.projection_dimension} exceeds the input dimension {d}",
                code="invalid_projection_dimension",
                details={"projection_dimension": self.projection_dimension, "dimension": d},
            )
        if self.projection_type == "identity" and self.projection_dimension not in (None, d):
            raise InvalidInput(
                f"the identity projection keeps the input dimension {d}, got projection_dimension {self.projection_dimension}",
                code="invalid_projection_dimension",
                details={"projection_dimension": self.projection_dimension, "dimension": d},
            )
        if self.raw_dimension > MAX_RAW_DIMENSION:
            raise InvalidInput(
                f"num_repetitions x 2^num_simhash_projections x projection_dimension = {self.raw_dimension} exceeds {MAX_RAW_DIMENSION}",
                code="fde_too_large",
                details={"raw_dimension": self.raw_dimension, "max": MAX_RAW_DIMENSION},
            )

    # -- random matrices --------------------------------------------------------------------------

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, reps = self._require_dimension(), self.num_repetitions
        shapes: dict[str, tuple[int, ...]] = {}
        if self.num_simhash_projections > 0:
            shapes["simhash"] = (reps, d, self.num_simhash_projections)
        if self.projection_type != "identity":
            shapes["projection"] = (reps, d, self.block_dimension)
        if self.final_projection_dimension is not None:
            shapes["count_sketch_index"] = (self.raw_dimension,)
            shapes["count_sketch_sign"] = (self.raw_dimension,)
        return shapes

    def _draw(self) -> dict[str, torch.Tensor]:
        """Draw every random matrix from the seed; per-repetition streams, as the reference seeds seed + repetition."""
        d, reps, k, d_proj = self._require_dimension(), self.num_repetitions, self.num_simhash_projections, self.block_dimension
        state: dict[str, torch.Tensor] = {}
        if k > 0:
            state["simhash"] = torch.stack([torch.randn(d, k, generator=_generator(self.seed, r, _SIMHASH)) for r in range(reps)])
        if self.projection_type == "ams":
            # Sparse AMS sketch: each input coordinate goes to one random output coordinate with a random sign.
            mats = torch.zeros(reps, d, d_proj)
            for r in range(reps):
                g = _generator(self.seed, r, _PROJECTION)
                columns = torch.randint(0, d_proj, (d,), generator=g)
                mats[r, torch.arange(d), columns] = _random_signs((d,), g)
            state["projection"] = mats
        elif self.projection_type == "dense":
            # Dense +-1/sqrt(d_proj): inner products are preserved in expectation.
            state["projection"] = (
                torch.stack([_random_signs((d, d_proj), _generator(self.seed, r, _PROJECTION)) for r in range(reps)]) / d_proj**0.5
            )
        if self.final_projection_dimension is not None:
            g = _generator(self.seed, 0, _COUNT_SKETCH)
            state["count_sketch_index"] = torch.randint(0, self.final_projection_dimension, (self.raw_dimension,), generator=g)
            state["count_sketch_sign"] = _random_signs((self.raw_dimension,), g)
        return state

    def _matrices(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            self._state = self._draw()
        return self._state

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._matrices()) if self.dimension is not None else {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = self._expected_shapes() if self.dimension is not None else {}
        got = {name: tuple(t.shape) for name, t in state.items()}
        if got != expected:
            raise InvalidInput(
                f"muvera weights {got} do not match its config {expected}",
                code="invalid_transform",
                details={"expected": {k: list(v) for k, v in expected.items()}, "got": {k: list(v) for k, v in got.items()}},
            )
        # Indices stay integral, everything else is float32 like the token vectors it multiplies.
        self._state = {name: t.to(torch.int64 if name == "count_sketch_index" else torch.float32) for name, t in state.items()}
        self._on_device = None

    def _tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The matrices on ``device``, flattened for one matmul over all repetitions; cached per device."""
        if self._on_device is None or self._on_device[0] != device:
            d, state = self._require_dimension(), self._matrices()
            tensors: dict[str, torch.Tensor] = {}
            if "simhash" in state:
                tensors["simhash"] = state["simhash"].permute(1, 0, 2).reshape(d, -1).to(device)
            if "projection" in state:
                tensors["projection"] = state["projection"].permute(1, 0, 2).reshape(d, -1).to(device)
            if "count_sketch_index" in state:
                tensors["count_sketch_index"] = state["count_sketch_index"].to(device)
                tensors["count_sketch_sign"] = state["count_sketch_sign"].to(device)
            self._on_device = (device, tensors)
        return self._on_device[1]

    # -- the Transform interface ------------------------------------------------------------------

    def fit(self, docs: Sequence[np.ndarray] | np.ndarray, queries: Sequence[np.ndarray] | np.ndarray | None = None) -> MuveraFDE:
        """Nothing to learn (random features): records the input dimension and checks the samples agree with it."""
        sets = as_token_sets(docs, self.dimension)
        if self.dimension is None:
            if not sets:
                raise InvalidInput("fit needs at least one token set to learn the input dimension", code="empty_fit")
            self.dimension = sets[0].shape[1]
            self._check_dimension_dependent()
        if queries is not None:
            as_token_sets(queries, self.dimension)
        return self

    def encode_docs(self, x: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return self._encode(x, documents=True)

    def encode_queries(self, x: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return self._encode(x, documents=False)

    def config(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "num_repetitions": self.num_repetitions,
            "num_simhash_projections": self.num_simhash_projections,
            "projection_type": self.projection_type,
            "projection_dimension": self.projection_dimension,
            "fill_empty_partitions": self.fill_empty_partitions,
            "query_fill_empty_partitions": self.query_fill_empty_partitions,
            "final_projection_dimension": self.final_projection_dimension,
            "seed": self.seed,
        }

    # -- encoding ---------------------------------------------------------------------------------

    def _encode(self, x: Sequence[np.ndarray] | np.ndarray, documents: bool) -> np.ndarray:
        sets = as_token_sets(x, self._require_dimension())
        out = np.zeros((len(sets), self.output_dim), dtype=np.float32)
        device = torch_device()
        tensors = self._tensors(device)
        lengths = np.array([len(s) for s in sets], dtype=np.int64)
        with torch.inference_mode():
            for start, stop in self._batches(lengths, documents):
                fde = self._encode_batch(sets[start:stop], lengths[start:stop], documents, tensors, device)
                out[start:stop] = fde.cpu().numpy()
        return out

    def _fills(self, documents: bool) -> bool:
        """Whether empty partitions of this side get their nearest token (with k_sim = 0 no partition is ever empty)."""
        wanted = self.fill_empty_partitions if documents else self.query_fill_empty_partitions
        return wanted and self.num_simhash_projections > 0

    def _batches(self, lengths: np.ndarray, documents: bool) -> list[tuple[int, int]]:
        """Consecutive runs of sets whose intermediates stay near _BATCH_ELEMENTS (at least one set per run)."""
        reps, parts, d_proj = self.num_repetitions, self.num_partitions, self.block_dimension
        filling = self._fills(documents)
        # Per token: its input row, its projections and, when filling, two words per partition (agreements
        # and keys). Per set: its FDE blocks and the copy handed back.
        per_token = self._require_dimension() + reps * (d_proj + (2 * parts if filling else 0))
        cost = np.cumsum(lengths * per_token + 2 * self.raw_dimension)
        runs: list[tuple[int, int]] = []
        start = 0
        while start < len(lengths):
            spent = cost[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(cost, spent + _BATCH_ELEMENTS, side="right")))
            runs.append((start, stop))
            start = stop
        return runs

    def _encode_batch(
        self,
        sets: list[np.ndarray],
        lengths: np.ndarray,
        documents: bool,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
    ) -> torch.Tensor:
        reps, k, parts, d_proj = self.num_repetitions, self.num_simhash_projections, self.num_partitions, self.block_dimension
        n_sets = len(sets)
        x = torch.from_numpy(np.concatenate(sets)).to(device)  # (T, d): every token of the batch
        n_tokens = x.shape[0]
        counts_per_set = torch.from_numpy(lengths).to(device)
        owner = torch.repeat_interleave(torch.arange(n_sets, device=device), counts_per_set)  # (T,) set of each token

        if k > 0:
            sketch = (x @ tensors["simhash"]).view(n_tokens, reps, k)
            part = partition_index(sketch > 0)  # (T, R); the reference's bit is "> 0"
        else:
            sketch = x.new_zeros((n_tokens, reps, 0))
            part = torch.zeros((n_tokens, reps), dtype=torch.int64, device=device)
        if self.projection_type == "identity":
            projected = x[:, None, :].expand(n_tokens, reps, d_proj)
        else:
            projected = (x @ tensors["projection"]).view(n_tokens, reps, d_proj)

        # Flat id of each token's block in the (sets, R, partitions) grid; one index_add sums every block.
        slots = ((owner[:, None] * reps + torch.arange(reps, device=device)) * parts + part).reshape(-1)
        blocks = x.new_zeros((n_sets * reps * parts, d_proj)).index_add_(0, slots, projected.reshape(-1, d_proj))
        sizes = torch.bincount(slots, minlength=n_sets * reps * parts)
        if documents:
            blocks /= sizes.clamp(min=1).unsqueeze(1).to(blocks.dtype)
        empty = sizes == 0
        if self._fills(documents) and bool(empty.any()):
            starts = torch.cumsum(counts_per_set, 0) - counts_per_set
            nearest = self._nearest_tokens(sketch, owner, starts, int(lengths.max()), n_sets)
            which = empty.nonzero().squeeze(1)
            repetition = (which // parts) % reps
            blocks[which] = projected[nearest.reshape(-1)[which], repetition]

        fde = blocks.view(n_sets, -1)
        if self.final_projection_dimension is not None:
            # Count-Sketch of the concatenated FDE, laid out (repetition, partition, coordinate) as in the reference.
            fde = fde.new_zeros((n_sets, self.final_projection_dimension)).index_add_(
                1, tensors["count_sketch_index"], fde * tensors["count_sketch_sign"]
            )
        return fde

    def _nearest_tokens(self, sketch: torch.Tensor, owner: torch.Tensor, starts: torch.Tensor, longest: int, n_sets: int) -> torch.Tensor:
        """(sets, R * partitions) index of the token whose sign bits disagree least with each partition's bits.

        Ties go to the set's earliest token, as in the reference's strict-less-than scan.
        """
        n_tokens, reps, k = sketch.shape
        parts = self.num_partitions
        device = sketch.device
        # Integer arithmetic carried exactly in floating point: float32 while every key fits its 24-bit mantissa.
        dtype = torch.float32 if (2 * k + 2) * longest < 1 << 24 else torch.float64
        token_signs = torch.where(sketch > 0, 1.0, -1.0).to(dtype).view(-1, k)
        part_signs = torch.where(partition_bits(torch.arange(parts, device=device), k), 1.0, -1.0).to(dtype)
        # For +-1 patterns 2 x disagreements = k - <s_token, s_partition>; the matmul sees only +-1 entries,
        # so it stays exact even where TF32 matmuls are enabled.
        agreement = token_signs @ part_signs.T  # (T * R, P)
        # Minimise 2 x disagreements x longest + position within the set: fewest disagreements, then earliest token.
        position = torch.arange(n_tokens, device=device) - starts[owner]
        bias = (k * longest + position).to(dtype).repeat_interleave(reps)[:, None]
        key = torch.add(bias, agreement, alpha=-longest).view(n_tokens, reps * parts)
        best = torch.full((n_sets, reps * parts), float("inf"), dtype=dtype, device=device)
        best.scatter_reduce_(0, owner[:, None].expand_as(key), key, reduce="amin")
        return starts[:, None] + best.long() % longest
