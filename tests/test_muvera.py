"""MUVERA fixed-dimensional encodings and exact Chamfer: the reference algorithm's details, and that FDE tracks Chamfer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from encoders.transforms import chamfer as chamfer_module
from encoders.transforms import muvera as muvera_module
from encoders.transforms.base import Pipeline, Transform
from encoders.transforms.chamfer import PackedSets, chamfer_scores
from encoders.transforms.muvera import MuveraFDE, partition_bits, partition_index

# Short texts on a dozen topics: the documents and queries for the real-token correlation test.
DOCS = [
    "the cat slept on the warm windowsill",
    "a dog chased the ball across the park",
    "kittens love to play with string",
    "puppies need training and patience",
    "the parrot repeated every word it heard",
    "goldfish swim slowly in a round bowl",
    "horses galloped across the open field",
    "the farmer milked the cows at dawn",
    "bees collect nectar from spring flowers",
    "an owl hunts mice at night",
    "the central bank raised interest rates",
    "stock markets fell after the earnings report",
    "inflation eroded the value of savings",
    "the company announced record quarterly profits",
    "investors bought government bonds for safety",
    "the startup raised money from venture capital",
    "mortgage payments rose with the new rates",
    "the currency weakened against the dollar",
    "a recession lowered consumer spending",
    "the budget deficit widened this year",
    "the striker scored a goal in the final minute",
    "the tennis match went to five sets",
    "she ran the marathon in under three hours",
    "the team won the championship trophy",
    "the goalkeeper saved a penalty kick",
    "cyclists climbed the steep mountain pass",
    "the swimmer broke the world record",
    "the coach praised the young players",
    "fans cheered loudly in the stadium",
    "the referee showed a red card",
    "bake the bread until the crust is golden",
    "chop the onions and fry them in butter",
    "the soup needs more salt and pepper",
    "whisk the eggs with sugar for the cake",
    "fresh pasta cooks in two minutes",
    "grill the fish with lemon and herbs",
    "the chef sharpened his knives before service",
    "roast the vegetables in a hot oven",
    "a spicy curry with rice and lentils",
    "chocolate melts gently over warm water",
    "the python function returns a list of numbers",
    "compile the program before running the tests",
    "the database index speeds up queries",
    "a memory leak crashed the server",
    "the compiler reported a syntax error",
    "use version control to track code changes",
    "the algorithm sorts the array in place",
    "the network request timed out after thirty seconds",
    "unit tests caught the bug early",
    "the graphics card renders the scene quickly",
    "heavy rain flooded the river valley",
    "snow covered the mountains in winter",
    "a thunderstorm knocked out the power",
    "the desert is hot and dry in summer",
    "strong winds damaged the old barn roof",
    "fog rolled in from the cold sea",
    "the drought dried up the wells",
    "a rainbow appeared after the storm",
    "the hurricane moved toward the coast",
    "frost killed the early tomato plants",
    "the doctor prescribed antibiotics for the infection",
    "regular exercise strengthens the heart",
    "the nurse checked the patient's blood pressure",
    "vaccines protect children from measles",
    "a broken leg needs a plaster cast",
    "sleep helps the body recover from illness",
    "the surgeon operated on the injured knee",
    "drink water to avoid dehydration",
    "the flu spread quickly through the school",
    "a healthy diet includes fruit and vegetables",
    "the train to the city leaves at noon",
    "our flight was delayed by two hours",
    "the ferry crossed the harbor at sunset",
    "she rented a car at the airport",
    "the bus was crowded during rush hour",
    "we hiked along the coastal trail",
    "the hotel room overlooked the beach",
    "pack a passport and a travel adapter",
    "the cruise ship docked at the island",
    "tourists photographed the ancient temple",
    "the orchestra played a symphony by beethoven",
    "he practices the guitar every evening",
    "the singer forgot the words on stage",
    "a jazz trio performed in the small club",
    "the drummer kept a steady rhythm",
    "she painted a landscape in oil colors",
    "the museum displayed ancient sculptures",
    "the novel tells the story of a lost sailor",
    "poets read their work at the festival",
    "the film won an award for its music",
    "the telescope revealed distant galaxies",
    "astronauts repaired the space station",
    "the chemist mixed two clear liquids",
    "plants turn sunlight into energy",
    "the volcano erupted and covered the town in ash",
    "earthquakes shake the ground along fault lines",
    "the physicist measured the speed of light",
    "genes carry information from parents to children",
    "the rocket launched toward the moon",
    "ice melts faster in warm water",
]
QUERIES = [
    "cat sleeping",
    "dog playing with a ball",
    "farm animals",
    "interest rates and the central bank",
    "stock market crash",
    "saving money and inflation",
    "football goal",
    "running a marathon",
    "winning a trophy",
    "how to bake bread",
    "cooking fish",
    "dessert with chocolate",
    "software bug in the code",
    "fast database queries",
    "storm and heavy rain",
    "cold winter weather",
    "visiting the doctor",
    "healthy heart and exercise",
    "travel by plane",
    "holiday at the beach",
    "playing music",
    "art museum",
    "space exploration",
    "volcanoes and earthquakes",
]


# -- an independent oracle: the reference's per-point loops, written out literally in numpy ---------------


def append_to_gray_code(gray: int, bit: bool) -> int:
    """The reference's AppendToGrayCode."""
    return (gray << 1) + (int(bit) ^ (gray & 1))


def reference_partition(bits: Sequence[bool]) -> int:
    index = 0
    for bit in bits:
        index = append_to_gray_code(index, bit)
    return index


def patterns_by_partition(k: int) -> dict[int, np.ndarray]:
    """Brute-force inverse: every sign pattern, keyed by the partition the reference puts it in."""
    return {reference_partition(bits): np.array(bits) for bits in itertools.product([False, True], repeat=k)}


def naive_gray_decode(index: int) -> int:
    """Gray-to-binary by prefix xor: the decoding a public port uses for partition bits, which is wrong here."""
    mask = index >> 1
    while mask:
        index ^= mask
        mask >>= 1
    return index


def reference_fde(points: np.ndarray, fde: MuveraFDE, documents: bool) -> np.ndarray:
    state = {name: t.double().numpy() for name, t in fde.state().items()}
    k, parts = fde.num_simhash_projections, fde.num_partitions
    patterns = patterns_by_partition(k)
    points = points.astype(np.float64)
    out = []
    for r in range(fde.num_repetitions):
        sketch = points @ state["simhash"][r] if k else np.zeros((len(points), 0))
        projected = points if fde.projection_type == "identity" else points @ state["projection"][r]
        blocks = np.zeros((parts, projected.shape[1]))
        sizes = np.zeros(parts)
        for i in range(len(points)):
            p = reference_partition(sketch[i] > 0)
            blocks[p] += projected[i]
            sizes[p] += 1
        for p in range(parts):
            if not documents:
                continue
            if sizes[p]:
                blocks[p] /= sizes[p]
            elif fde.fill_empty_partitions and k:
                disagreements = [int(((sketch[i] > 0) != patterns[p]).sum()) for i in range(len(points))]
                blocks[p] = projected[int(np.argmin(disagreements))]  # argmin: the first of equals, like the reference
        out.append(blocks.ravel())
    raw = np.concatenate(out)
    if fde.final_projection_dimension is None:
        return raw
    sketched = np.zeros(fde.final_projection_dimension)
    for j, (target, sign) in enumerate(zip(state["count_sketch_index"].astype(int), state["count_sketch_sign"], strict=True)):
        sketched[target] += sign * raw[j]
    return sketched


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_sets(rng: np.random.Generator, count: int, dim: int, low: int, high: int) -> list[np.ndarray]:
    return [unit(rng.normal(size=(int(rng.integers(low, high + 1)), dim))) for _ in range(count)]


def correlations(fde: MuveraFDE, queries: list[np.ndarray], docs: list[np.ndarray], exact: np.ndarray) -> tuple[float, float]:
    approx = (fde.encode_queries(queries) @ fde.encode_docs(docs).T).ravel()
    return float(pearsonr(approx, exact.ravel())[0]), float(spearmanr(approx, exact.ravel())[0])


# -- Gray-code partition ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_partition_ids_decode_to_the_sign_bits_that_made_them(k: int) -> None:
    ids = torch.arange(1 << k)
    bits = partition_bits(ids, k)
    assert torch.equal(partition_index(bits), ids)
    expected = patterns_by_partition(k)
    assert sorted(expected) == list(range(1 << k))  # the reference's ids are a bijection onto 0..2^k-1
    for p in range(1 << k):
        assert bits[p].tolist() == expected[p].tolist()
        assert partition_index(torch.from_numpy(expected[p])).item() == p
    if k >= 3:
        # The test discriminates: the known-wrong decoding disagrees with the reference for some id
        # (on one or two bits, Gray encoding and decoding coincide, so the bug hides there).
        as_int = [int("".join("1" if b else "0" for b in expected[p]), 2) for p in range(1 << k)]
        assert any(naive_gray_decode(p) != as_int[p] for p in range(1 << k))


def test_partition_index_batches_over_leading_dimensions() -> None:
    bits = torch.rand(7, 3, 6) > 0.5
    ids = partition_index(bits)
    assert ids.shape == (7, 3)
    assert ids[4, 2].item() == reference_partition(bits[4, 2].tolist())


# -- the encoding against the reference's loops -------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"num_repetitions": 3, "num_simhash_projections": 4, "projection_type": "identity"},
        {
            "num_repetitions": 2,
            "num_simhash_projections": 3,
            "projection_type": "ams",
            "projection_dimension": 5,
            "final_projection_dimension": 50,
        },
        {"num_repetitions": 2, "num_simhash_projections": 2, "projection_type": "dense", "projection_dimension": 4},
        {"num_repetitions": 2, "num_simhash_projections": 4, "projection_type": "identity", "fill_empty_partitions": False},
        {"num_repetitions": 2, "num_simhash_projections": 0, "projection_type": "ams", "projection_dimension": 3},
    ],
)
def test_encodings_match_the_reference_loops(config: dict) -> None:
    fde = MuveraFDE(8, seed=3, **config)
    sets = random_sets(np.random.default_rng(1), 12, 8, 1, 9)
    for documents, encode in ((True, fde.encode_docs), (False, fde.encode_queries)):
        got = encode(sets)
        assert got.shape == (12, fde.output_dim) and got.dtype == np.float32
        want = np.stack([reference_fde(s, fde, documents) for s in sets])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_fill_takes_the_token_with_fewest_sign_disagreements() -> None:
    k = 5
    fde = MuveraFDE(16, num_repetitions=4, num_simhash_projections=k, seed=7)
    sets = random_sets(np.random.default_rng(2), 20, 16, 2, 4)  # 2-4 tokens, 32 partitions: mostly empty
    encoded = fde.encode_docs(sets).reshape(len(sets), 4, 1 << k, 16)
    simhash = fde.state()["simhash"].double().numpy()
    patterns = patterns_by_partition(k)
    checked = naive_would_differ = 0
    for s, doc in enumerate(sets):
        for r in range(4):
            signs = doc.astype(np.float64) @ simhash[r] > 0
            occupied = {reference_partition(bits) for bits in signs}
            for p in range(1 << k):
                if p in occupied:
                    continue
                disagreements = (signs != patterns[p]).sum(axis=1)
                nearest = int(np.argmin(disagreements))
                np.testing.assert_allclose(encoded[s, r, p], doc[nearest], atol=1e-6)
                checked += 1
                naive = np.array([c == "1" for c in format(naive_gray_decode(p), f"0{k}b")])
                naive_would_differ += disagreements[int(np.argmin((signs != naive).sum(axis=1)))] > disagreements[nearest]
    assert checked > 1000
    assert naive_would_differ > 0  # the wrong decoding would have filled some partitions from a farther token


def test_fill_stays_exact_when_set_lengths_outgrow_float32_keys() -> None:
    fde = MuveraFDE(8, num_repetitions=2, num_simhash_projections=4)
    sketch = torch.randn(9, 2, 4, generator=torch.Generator().manual_seed(0))
    owner, starts = torch.tensor([0] * 4 + [1] * 5), torch.tensor([0, 4])
    # Any bound on set lengths works; one past float32's exact integers switches the keys to float64.
    assert torch.equal(fde._nearest_tokens(sketch, owner, starts, 5, 2), fde._nearest_tokens(sketch, owner, starts, 1 << 23, 2))


def test_queries_never_fill_empty_partitions() -> None:
    fde = MuveraFDE(8, num_repetitions=3, num_simhash_projections=3, fill_empty_partitions=True)
    token = unit(np.random.default_rng(3).normal(size=(1, 8)))
    query = fde.encode_queries([token]).reshape(3, 8, 8)
    doc = fde.encode_docs([token]).reshape(3, 8, 8)
    for r in range(3):
        nonzero = np.flatnonzero(np.abs(query[r]).sum(axis=1))
        assert len(nonzero) == 1  # one token, one partition per repetition; the other seven stay zero
        np.testing.assert_allclose(query[r, nonzero[0]], token[0], atol=1e-6)
        np.testing.assert_allclose(doc[r], np.repeat(token, 8, axis=0), atol=1e-6)  # documents fill every partition


def test_documents_average_and_queries_sum_on_a_hand_made_example() -> None:
    # One repetition, one SimHash direction (the first axis): the sign of x0 picks partition 1 (x0 > 0) or 0.
    fde = MuveraFDE(2, num_repetitions=1, num_simhash_projections=1)
    fde.load_state({"simhash": torch.tensor([[[1.0], [0.0]]])})
    tokens = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(fde.encode_docs([tokens])[0], [-1.0, 0.0, 0.8, 0.4], atol=1e-6)
    np.testing.assert_allclose(fde.encode_queries([tokens])[0], [-1.0, 0.0, 1.6, 0.8], atol=1e-6)
    # Partition 0 empty: a document fills it with its nearest token, a query leaves it zero.
    np.testing.assert_allclose(fde.encode_docs([tokens[:2]])[0], [1.0, 0.0, 0.8, 0.4], atol=1e-6)
    np.testing.assert_allclose(fde.encode_queries([tokens[:2]])[0], [0.0, 0.0, 1.6, 0.8], atol=1e-6)


def test_batches_of_any_size_encode_like_single_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    fde = MuveraFDE(16, num_repetitions=3, num_simhash_projections=3, projection_type="ams", projection_dimension=8)
    sets = random_sets(np.random.default_rng(4), 30, 16, 1, 20)
    together = fde.encode_docs(sets), fde.encode_queries(sets)
    monkeypatch.setattr(muvera_module, "_BATCH_ELEMENTS", 1)  # forces one set per batch
    np.testing.assert_allclose(fde.encode_docs(sets), together[0], atol=1e-6)
    np.testing.assert_allclose(fde.encode_queries(sets), together[1], atol=1e-6)
    assert fde.encode_docs([]).shape == (0, fde.output_dim)


# -- FDE inner products track Chamfer ------------------------------------------------------------------------


def test_fde_tracks_chamfer_on_random_token_sets() -> None:
    """Clustered random sets (pure noise has almost no Chamfer spread): queries are noisy subsets of documents."""
    rng = np.random.default_rng(0)
    dim = 32
    centers = unit(rng.normal(size=(24, dim)))
    docs = []
    for _ in range(150):
        topics = rng.choice(24, size=int(rng.integers(1, 4)), replace=False)
        n = int(rng.integers(6, 30))
        docs.append(unit(centers[rng.choice(topics, size=n)] + rng.normal(size=(n, dim)) / 6))
    queries = []
    for doc in docs[:30]:
        picked = doc[rng.choice(len(doc), size=6, replace=False)]
        queries.append(unit(picked + rng.normal(size=picked.shape) * 0.05))
    exact = chamfer_scores(queries, docs)

    def corr(reps: int, **projection: object) -> tuple[float, float]:
        return correlations(MuveraFDE(dim, num_repetitions=reps, num_simhash_projections=3, **projection), queries, docs, exact)  # type: ignore[arg-type]

    by_reps = [corr(r, projection_type="ams", projection_dimension=8) for r in (1, 5, 20)]
    by_dim = [corr(20, projection_type="ams", projection_dimension=p) for p in (2, 8)] + [corr(20, projection_type="identity")]
    print("random sets, pearson/spearman by R (1, 5, 20):", by_reps, "by d_proj (2, 8, 32):", by_dim)
    for series in (by_reps, by_dim):
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(series))
    assert by_dim[-1][0] > 0.9 and by_dim[-1][1] > 0.85


def test_fde_tracks_chamfer_on_minilm_token_sets(registry: ModelRegistry) -> None:
    encoder = registry.get("minilm-l6")
    docs, queries = encoder.encode_tokens(DOCS), encoder.encode_tokens(QUERIES)
    exact = chamfer_scores(queries, docs)

    def corr(reps: int, **projection: object) -> tuple[float, float]:
        return correlations(MuveraFDE(384, num_repetitions=reps, num_simhash_projections=3, **projection), queries, docs, exact)  # type: ignore[arg-type]

    by_reps = [corr(r, projection_type="ams", projection_dimension=16) for r in (1, 5, 20)]
    by_dim = [corr(20, projection_type="ams", projection_dimension=p) for p in (4, 16, 64)] + [corr(20, projection_type="identity")]
    print("MiniLM tokens, pearson/spearman by R (1, 5, 20):", by_reps, "by d_proj (4, 16, 64, 384):", by_dim)
    for series in (by_reps, by_dim):
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(series))
    assert by_dim[-1][0] > 0.9 and by_dim[-1][1] > 0.8
    # Filling empty document partitions is what makes sparse partitions usable on short texts.
    sparse = {"num_repetitions": 20, "num_simhash_projections": 5, "projection_type": "ams", "projection_dimension": 16}
    filled = correlations(MuveraFDE(384, **sparse), queries, docs, exact)  # type: ignore[arg-type]
    unfilled = correlations(MuveraFDE(384, fill_empty_partitions=False, **sparse), queries, docs, exact)  # type: ignore[arg-type]
    assert filled[1] > unfilled[1]


# -- persistence ---------------------------------------------------------------------------------------------


def test_save_and_load_give_bit_identical_encodings(tmp_path: Path) -> None:
    fde = MuveraFDE(
        16,
        num_repetitions=4,
        num_simhash_projections=3,
        projection_type="ams",
        projection_dimension=8,
        final_projection_dimension=64,
        seed=11,
    )
    sets = random_sets(np.random.default_rng(5), 10, 16, 1, 12)
    fde.save(tmp_path / "fde")
    loaded = Transform.load(tmp_path / "fde")
    assert isinstance(loaded, MuveraFDE) and loaded.config() == fde.config()
    assert np.array_equal(loaded.encode_docs(sets), fde.encode_docs(sets))
    assert np.array_equal(loaded.encode_queries(sets), fde.encode_queries(sets))
    # The saved matrices, not a re-draw from the seed, are what a loaded transform uses.
    tweaked = {name: t.clone() for name, t in fde.state().items()}
    tweaked["projection"].neg_()
    fde.load_state(tweaked)
    fde.save(tmp_path / "tweaked")
    reloaded = Transform.load(tmp_path / "tweaked")
    assert np.array_equal(reloaded.encode_docs(sets), fde.encode_docs(sets))
    assert not np.array_equal(reloaded.encode_docs(sets), loaded.encode_docs(sets))


def test_fit_records_the_dimension_inside_a_pipeline(tmp_path: Path) -> None:
    sets = random_sets(np.random.default_rng(6), 5, 12, 1, 6)
    pipeline = Pipeline([MuveraFDE(num_repetitions=2, num_simhash_projections=2)]).fit(sets)  # type: ignore[arg-type]
    stage = pipeline.stages[0]
    assert isinstance(stage, MuveraFDE) and stage.dimension == 12 and stage.output_dim == 2 * 4 * 12
    pipeline.save(tmp_path / "p")
    reloaded = Pipeline.load(tmp_path / "p")
    assert np.array_equal(reloaded.encode_queries(sets), pipeline.encode_queries(sets))  # type: ignore[arg-type]
    # Same seed, dimension given up front: the same random matrices.
    assert np.array_equal(MuveraFDE(12, num_repetitions=2, num_simhash_projections=2).encode_docs(sets), pipeline.encode_docs(sets))  # type: ignore[arg-type]


def test_weights_that_do_not_match_the_config_are_refused(tmp_path: Path) -> None:
    fde = MuveraFDE(8, num_repetitions=2, num_simhash_projections=3)
    with pytest.raises(InvalidInput) as err:
        fde.load_state({"simhash": torch.zeros(2, 8, 4)})
    assert err.value.code == "invalid_transform"


# -- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"num_simhash_projections": 31}, "invalid_num_simhash_projections"),
        ({"num_simhash_projections": -1}, "invalid_num_simhash_projections"),
        ({"projection_type": "ams", "projection_dimension": 17}, "invalid_projection_dimension"),
        ({"projection_type": "dense"}, "invalid_projection_dimension"),
        ({"projection_type": "ams", "projection_dimension": 0}, "invalid_projection_dimension"),
        ({"projection_type": "identity", "projection_dimension": 8}, "invalid_projection_dimension"),
        ({"projection_type": "gaussian", "projection_dimension": 8}, "invalid_projection_type"),
        ({"num_repetitions": 0}, "invalid_num_repetitions"),
        ({"num_repetitions": 2.5}, "invalid_num_repetitions"),
        ({"dimension": 0}, "invalid_dimension"),
        ({"final_projection_dimension": 0}, "invalid_final_projection_dimension"),
        ({"seed": -1}, "invalid_seed"),
        ({"fill_empty_partitions": "yes"}, "invalid_fill_empty_partitions"),
        ({"num_simhash_projections": 30}, "fde_too_large"),
    ],
)
def test_invalid_configs_are_refused_with_a_code(config: dict, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        MuveraFDE(**{"dimension": 16, **config})
    assert err.value.code == code


def test_projection_dimension_is_checked_when_fit_learns_the_dimension() -> None:
    fde = MuveraFDE(projection_type="ams", projection_dimension=32)
    with pytest.raises(InvalidInput) as err:
        fde.fit([np.ones((3, 16), dtype=np.float32)])
    assert err.value.code == "invalid_projection_dimension"


@pytest.mark.parametrize(
    ("sets", "code"),
    [
        ([np.ones((3, 8)), np.ones((2, 7))], "dimension_mismatch"),
        ([np.ones((3, 8)), np.zeros((0, 8))], "empty_vector_set"),
        ([np.ones(8)], "invalid_vectors"),
        ([np.full((2, 8), np.nan)], "invalid_vectors"),
    ],
)
def test_bad_token_sets_are_refused(sets: list[np.ndarray], code: str) -> None:
    fde = MuveraFDE(8, num_repetitions=1, num_simhash_projections=2)
    for encode in (fde.encode_docs, fde.encode_queries, fde.fit):
        with pytest.raises(InvalidInput) as err:
            encode(sets)
        assert err.value.code == code


def test_encoding_before_the_dimension_is_known_is_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        MuveraFDE().encode_docs([np.ones((2, 8), dtype=np.float32)])
    assert err.value.code == "not_fitted"


# -- exact Chamfer -------------------------------------------------------------------------------------------


def naive_chamfer(query: np.ndarray, doc: np.ndarray) -> float:
    total = 0.0
    for q in query:
        total += max(float(np.dot(q.astype(np.float64), d)) for d in doc)
    return total


def test_chamfer_equals_a_naive_double_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    queries, docs = random_sets(rng, 5, 16, 1, 8), random_sets(rng, 40, 16, 1, 25)
    want = np.array([[naive_chamfer(q, d) for d in docs] for q in queries])
    np.testing.assert_allclose(chamfer_scores(queries, docs), want, atol=1e-5)
    # Small blocks: many query and document blocks, each written back in place.
    monkeypatch.setattr(chamfer_module, "_BLOCK_ELEMENTS", 400)
    monkeypatch.setattr(chamfer_module, "_QUERY_TOKENS", 9)
    np.testing.assert_allclose(chamfer_scores(queries, docs), want, atol=1e-5)
    # Documents packed once and scored query by query, as a brute-force search does.
    packed = PackedSets.pack(docs)
    assert packed.offsets[-1] == sum(len(d) for d in docs) and len(packed) == len(docs)
    np.testing.assert_allclose(np.concatenate([chamfer_scores([q], packed) for q in queries]), want, atol=1e-5)
    assert chamfer_scores(queries, []).shape == (5, 0)
