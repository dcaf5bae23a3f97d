"""The AG News CSV release reader, local files, label mapping and the seeded, stratified carve-outs."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Value,
    concatenate_datasets,
)

from devtools.commands import CLASSES
from pipeline.data.fingerprint import fingerprint, identify, is_content_fingerprint
from pipeline.data.read import (
    ROWS_AT_A_TIME,
    label_names,
    read_ag_news_csv,
    unescape_ag_news,
)
from pipeline.data.splits import Duplicates, _stratified_split, drop_duplicates, find_duplicates, load_splits, tokenize
from pipeline.errors import PipelineError
from tests.conftest import compose_config


def dataset_cfg(*overrides):
    return compose_config(*overrides).dataset


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Costs \\$5 now", "Costs $5 now"),
        ("allow broader\\network access", "allow broader network access"),
        ("In House?\\\\The next", "In House? The next"),
        ("India #39;s star", "India's star"),
        ("showing  quot;tremendous", 'showing "tremendous'),
        ("AT&amp;T", "AT&T"),
    ],
)
def test_unescape_release_text(raw, expected):
    assert unescape_ag_news(raw) == expected


def test_release_reader_joins_title_and_description_and_maps_labels(release_dir):
    train, test = read_ag_news_csv(release_dir)
    assert len(train) == 48 and len(test) == 32
    assert train.features["label"].names == CLASSES
    first = train[0]
    assert first["text"] == "World title 0 Costs $5 at 'shop' line0"
    assert first["label"] == 0  # class index 1 in the file
    assert Counter(train["label"]) == {0: 12, 1: 12, 2: 12, 3: 12}


def test_release_reader_on_shared_ag_news():
    train, test = read_ag_news_csv(Path(compose_config().hydra.runtime.cwd).parent / "shared/data/ag_news_csv")
    assert (len(train), len(test)) == (6000, 1600)
    assert not any("\\" in t for t in train["text"][:500])


def test_release_reader_rejects_class_index_out_of_range(release_dir):
    (release_dir / "test.csv").write_text('"5","t","d"\n')
    with pytest.raises(PipelineError, match="class index 5 is outside 1..4"):
        read_ag_news_csv(release_dir)


def test_splits_are_stratified_seeded_and_capped(release_dir):
    cfg = dataset_cfg(f"dataset.data_dir={release_dir}", "dataset.validation_fraction=0.25")
    splits = load_splits(cfg, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 36, "validation": 12, "test": 32}
    assert Counter(splits["validation"]["label"]) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert load_splits(cfg, seed=1)["validation"]["text"] == splits["validation"]["text"]
    assert load_splits(cfg, seed=2)["validation"]["text"] != splits["validation"]["text"]
    capped = load_splits(
        dataset_cfg(f"dataset.data_dir={release_dir}", "dataset.max_train_samples=8", "dataset.max_eval_samples=4"), 1
    )
    assert (len(capped["train"]), len(capped["validation"]), len(capped["test"])) == (8, 4, 4)
    assert set(capped["train"]["label"]) == {0, 1, 2, 3}


def local_csv(path, labels, texts=None):
    texts = texts or [f"text {i}" for i in range(len(labels))]
    pd.DataFrame({"headline": texts, "body": [f"body {i}" for i in range(len(labels))], "topic": labels}).to_csv(
        path, index=False
    )
    return path


def test_local_string_labels_infer_sorted_names_and_carve_test(tmp_path):
    train = local_csv(tmp_path / "train.csv", ["spam", "ham", "eggs"] * 20)
    cfg = dataset_cfg(
        "dataset=local",
        f"dataset.train_file={train}",
        "dataset.text_columns=[headline,body]",
        "dataset.label_column=topic",
    )
    splits = load_splits(cfg, seed=0)
    assert label_names(splits) == ["eggs", "ham", "spam"]
    assert len(splits["test"]) == 12 and len(splits["train"]) + len(splits["validation"]) == 48
    row = splits["train"][0]
    assert row["text"].startswith("text ") and " body " in row["text"]


def headline_splits(train: Path, test: Path):
    """The splits of a local train and test file, texts in `headline` and labels in `topic`."""
    cfg = dataset_cfg(
        "dataset=local",
        f"dataset.train_file={train}",
        f"dataset.test_file={test}",
        "dataset.label_column=topic",
        "dataset.text_columns=[headline]",
    )
    return load_splits(cfg, seed=0)


def test_local_integer_labels_sort_numerically(tmp_path):
    train = local_csv(tmp_path / "train.csv", [2, 10, 1] * 10)
    test = local_csv(tmp_path / "test.csv", [1, 2, 10])
    splits = headline_splits(train, test)
    assert label_names(splits) == ["1", "2", "10"]
    assert splits["test"]["label"] == [0, 1, 2]


def test_train_and_test_files_may_each_have_their_own_format(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.parquet"
    pd.read_csv(local_csv(tmp_path / "t.csv", [2, 10, 1] * 10)).to_json(train, orient="records", lines=True)
    pd.read_csv(local_csv(tmp_path / "v.csv", [1, 2, 10], ["one", "two", "ten"])).to_parquet(test)
    splits = headline_splits(train, test)
    assert label_names(splits) == ["1", "2", "10"]
    assert splits["test"]["text"] == ["one", "two", "ten"] and splits["test"]["label"] == [0, 1, 2]


def test_test_label_outside_training_labels_is_rejected(tmp_path):
    train = local_csv(tmp_path / "train.csv", ["a", "b"] * 10)
    test = local_csv(tmp_path / "test.csv", ["a", "c"])
    with pytest.raises(PipelineError, match="label 'c' is not among the training labels"):
        headline_splits(train, test)


def test_tokenize_keeps_lengths_unpadded(release_dir):
    from pipeline.training.model import load_tokenizer

    cfg = compose_config("model=tiny", f"dataset.data_dir={release_dir}")
    splits = load_splits(cfg.dataset, seed=0)
    tokenized = tokenize(splits, load_tokenizer(cfg.model), max_length=8)
    lengths = {len(ids) for ids in tokenized["train"]["input_ids"]}
    assert max(lengths) == 8 and "text" not in tokenized["train"].column_names


def test_tokenize_keeps_ids_and_only_token_types_that_carry_something(release_dir):
    """The collator makes the attention mask; BERT's token types of one text are all 0, but a tokenizer
    that marks [CLS] with type 2 (as Funnel does) keeps them."""
    from tokenizers.processors import TemplateProcessing

    from pipeline.training.model import load_tokenizer

    cfg = compose_config("model=tiny", f"dataset.data_dir={release_dir}")
    splits = load_splits(cfg.dataset, seed=0)
    bert = load_tokenizer(cfg.model)
    assert tokenize(splits, bert, max_length=8)["train"].column_names == ["label", "input_ids"]
    funnel_like = load_tokenizer(cfg.model)
    funnel_like.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS]:2 $A:0 [SEP]:0",
        special_tokens=[("[CLS]", bert.cls_token_id), ("[SEP]", bert.sep_token_id)],
    )
    tokenized = tokenize(splits, funnel_like, max_length=8)["train"]
    assert tokenized.column_names == ["label", "input_ids", "token_type_ids"]
    assert tokenized[0]["token_type_ids"][:2] == [2, 0]


def test_tokenized_splits_are_reused_across_runs_from_the_datasets_cache(release_dir):
    from pipeline.training.model import load_tokenizer

    cfg = compose_config("model=tiny", f"dataset.data_dir={release_dir}")
    splits = load_splits(cfg.dataset, seed=0)
    first = tokenize(splits, load_tokenizer(cfg.model), max_length=8)  # this tokenizer has now truncated
    again = tokenize(load_splits(cfg.dataset, seed=0), load_tokenizer(cfg.model), max_length=8)
    longer = tokenize(splits, load_tokenizer(cfg.model), max_length=16)
    assert again["train"].cache_files == first["train"].cache_files != []
    assert longer["train"].cache_files != first["train"].cache_files


READ_AND_TOKENIZE = """
import json, sys
from pipeline.data.splits import load_splits, tokenize
from pipeline.training.model import load_tokenizer
from tests.conftest import compose_config
cfg = compose_config("model=tiny", "dataset=local", "dataset.train_file=" + sys.argv[1], "dataset.max_train_samples=40")
tokenized = tokenize(load_splits(cfg.dataset, seed=3), load_tokenizer(cfg.model), max_length=8)
print(json.dumps({name: [f["filename"] for f in ds.cache_files] for name, ds in tokenized.items()}))
"""


def test_a_local_file_is_read_split_and_tokenized_once_then_reused_by_the_next_process(tmp_path):
    """The same command again (a new process) finds every step of a user's CSV in the datasets cache. Before,
    datasets' hash of the normalizing closure changed between processes, and every run redid all of it."""
    token = tmp_path.name  # rows this machine has not seen
    path = _write_csv(tmp_path / "mine.csv", [(f"{token} text {i}", ["spam", "ham", "eggs"][i % 3]) for i in range(90)])
    runs = [
        subprocess.run(
            [sys.executable, "-c", READ_AND_TOKENIZE, str(path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(2)
    ]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    first, again = (json.loads(run.stdout.strip().splitlines()[-1]) for run in runs)
    assert sorted(first) == ["test", "train", "validation"] and all(first.values())
    assert again == first


def test_the_stratified_split_is_datasets_own_row_for_row():
    """The splits' rows and order stay those of `train_test_split`, so studies and versions recorded before
    the split was read through Arrow keep matching their data."""
    features = Features(text=Value("string"), label=ClassLabel(names=["a", "b", "c"]))
    ds = Dataset.from_dict(
        {"text": [f"t{i}" for i in range(101)], "label": [i % 7 % 3 for i in range(101)]}, features=features
    )
    ds = ds.select(range(100, 0, -1))  # through an indices mapping, as after an earlier carve
    for n_first, n_second, seed in [(80, 20, 42), (30, 70, 7), (11, 5, 0)]:
        theirs = ds.train_test_split(train_size=n_first, test_size=n_second, seed=seed, stratify_by_column="label")
        ours = _stratified_split(ds, n_first, n_second, seed)
        assert [part["text"][:] for part in ours] == [theirs["train"]["text"][:], theirs["test"]["text"][:]]


def test_a_nan_label_is_an_empty_label_not_a_class(tmp_path):
    path = tmp_path / "mine.parquet"
    pd.DataFrame(
        {"text": [f"row {i}" for i in range(40)], "label": [float(i % 2) for i in range(39)] + [float("nan")]}
    ).to_parquet(path)
    with pytest.raises(PipelineError, match="'label': a label is empty; every row needs a label"):
        load_splits(dataset_cfg("dataset=local", f"dataset.train_file={path}"), 42)


def test_texts_are_checked_past_the_first_rows_read(tmp_path):
    """The every-text-empty check reads the rows in batches: text only after the first batch is still text."""
    rows = [("", "ab"[i % 2]) for i in range(ROWS_AT_A_TIME + 10)] + [("late text", "a")]
    path = _write_csv(tmp_path / "mostly_empty.csv", rows)
    assert len(load_splits(dataset_cfg("dataset=local", f"dataset.train_file={path}"), 42)["train"]) > 0


def test_the_splits_of_fixed_rows_keep_their_content_across_upgrades(tmp_path):
    """The rows each carve-out holds, pinned: a change to how the stratified split chooses them (ours or an
    upgrade of datasets or numpy) would refuse every recorded study and version as made on other data."""
    path = _write_csv(tmp_path / "fixed.csv", [(f"text {i}", "xyz"[i % 7 % 3]) for i in range(300)])
    splits = load_splits(dataset_cfg("dataset=local", f"dataset.train_file={path}", "dataset.max_train_samples=100"), 7)
    assert {name: len(ds) for name, ds in splits.items()} == {"train": 100, "validation": 24, "test": 60}
    assert fingerprint(splits) == "sha256:455503efdfaaa425421dd054530a81c2c91ada492888f9fff4245c098b22003f"


def _write_csv(path, rows: list[tuple[str, str]]):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_fingerprint_is_the_content_not_the_path_or_cache(tmp_path):
    """The same rows in two new directories (each parsed fresh into its own cache files) fingerprint the
    same; one row moved between splits does not."""
    rows = [(f"review {i} {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(60)]
    ids = [
        fingerprint(load_splits(dataset_cfg("dataset=local", f"dataset.train_file={path}"), 42))
        for path in (_write_csv(tmp_path / "a" / "mine.csv", rows), _write_csv(tmp_path / "b" / "c" / "copy.csv", rows))
    ]
    assert ids[0] == ids[1] and is_content_fingerprint(ids[0])
    splits = load_splits(dataset_cfg("dataset=local", f"dataset.train_file={tmp_path / 'a' / 'mine.csv'}"), 42)
    moved = DatasetDict(
        train=splits["train"].select(range(1, len(splits["train"]))),
        validation=splits["validation"],
        test=concatenate_datasets([splits["test"], splits["train"].select([0])]),
    )
    assert fingerprint(moved) != ids[0]


def test_fingerprint_ignores_how_arrow_lays_out_the_rows():
    features = Features(text=Value("string"), label=ClassLabel(names=["a", "b"]))
    texts, labels = [f"text number {i}" for i in range(10)], [i % 2 for i in range(10)]
    whole = Dataset.from_dict({"text": texts, "label": labels}, features=features)
    # The same rows as a slice of a larger table, and as two concatenated chunks.
    sliced = Dataset.from_dict({"text": ["x", *texts], "label": [0, *labels]}, features=features).select(range(1, 11))
    chunked = concatenate_datasets([whole.select(range(4)), whole.select(range(4, 10))])
    assert len({fingerprint(DatasetDict(train=ds)) for ds in (whole, sliced, chunked)}) == 1
    renamed = whole.cast_column("label", ClassLabel(names=["x", "b"]))
    assert fingerprint(DatasetDict(train=renamed)) != fingerprint(DatasetDict(train=whole))


def test_a_test_split_lacking_training_classes_is_named_in_a_warning(tmp_path, caplog):
    train = _write_csv(tmp_path / "train.csv", [(f"text {i}", "abc"[i % 3]) for i in range(60)])
    test = _write_csv(tmp_path / "test.csv", [(f"text {i}", "ab"[i % 2]) for i in range(10)])
    caplog.set_level("WARNING", logger="pipeline.data")
    load_splits(dataset_cfg("dataset=local", f"dataset.train_file={train}", f"dataset.test_file={test}"), 42)
    assert "the test split has no rows of class 'c': its scores count the other classes only" in caplog.text


def test_the_content_fingerprint_keeps_its_value_so_recorded_studies_and_versions_still_match():
    """Studies and versions store this value; a change to how it is computed would refuse every one of them
    as 'made on other data'. The per-split digests (MLflow's dataset inputs) come from the same pass."""
    features = Features(text=Value("string"), label=ClassLabel(names=["a", "b"]))
    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["x", "héllo", None, "zz" * 5000], "label": [0, 1, 0, 1]}, features=features),
        test=Dataset.from_dict({"text": ["q"], "label": [1]}, features=features),
    )
    identity = identify(splits)
    assert identity.fingerprint == fingerprint(splits)
    assert identity.fingerprint == "sha256:8a7b3d4322b1497eb74235a9bf8edfc3e1c4364fc1af35f3ccd8c22c687470c8"
    assert sorted(identity.splits) == ["test", "train"] and len(set(identity.splits.values())) == 2


def labelled(rows: list[tuple[str, int]]) -> Dataset:
    features = Features(text=Value("string"), label=ClassLabel(names=["a", "b"]))
    return Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]}, features=features)


def test_texts_in_more_than_one_split_are_counted_exactly_and_dropped_from_train_and_validation_only():
    splits = DatasetDict(
        train=labelled([("t0", 0), ("t1", 1), ("v0", 0), ("x", 0), ("x", 1), ("y", 1), ("y", 1), ("s0", 0)]),
        validation=labelled([("v0", 0), ("v1", 1), ("s1", 1)]),
        test=labelled([("s0", 0), ("s1", 1), ("s2", 0), ("s0", 0)]),
    )
    found = find_duplicates(splits)
    # v0 in both; s0 twice in test and once in train; s1 in validation; x under two labels (y twice, one label).
    assert found == Duplicates(validation_in_train=1, test_in_train=2, test_in_validation=1, conflicting_in_train=1)
    assert found.metrics()["duplicates_test_in_train"] == 2.0
    dropped = drop_duplicates(splits)
    assert dropped["train"]["text"] == ["t0", "t1", "x", "x", "y", "y"]
    assert dropped["validation"]["text"] == ["v0", "v1"] and dropped["test"]["text"] == splits["test"]["text"]
    assert find_duplicates(dropped) == Duplicates(0, 0, 0, conflicting_in_train=1)


def test_a_run_on_files_with_planted_duplicates_warns_and_drops_them_when_asked(tmp_path, caplog):
    train = pd.DataFrame({"text": [f"row {i}" for i in range(60)], "label": ["ab"[i % 2] for i in range(60)]})
    test = pd.DataFrame({"text": [f"row {i}" for i in range(5)] + [f"new {i}" for i in range(15)]})
    test["label"] = ["ab"[i % 2] for i in range(20)]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    files = ["dataset=local", f"dataset.train_file={tmp_path}/train.csv", f"dataset.test_file={tmp_path}/test.csv"]
    splits = load_splits(dataset_cfg(*files), 42)
    found = find_duplicates(splits)
    assert found.test_in_train + found.test_in_validation == 5  # each planted text is in train or validation
    with caplog.at_level("WARNING"):
        found.warn(dropping=False)
    assert "5 test texts also occur in train or validation: test accuracy would be optimistic" in caplog.text
    dropped = drop_duplicates(splits)
    assert len(dropped["train"]) + len(dropped["validation"]) == 55 and len(dropped["test"]) == 20
