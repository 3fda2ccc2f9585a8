"""RunSettings: coercion, ranges, unknown names, YAML files."""

from __future__ import annotations

import json

import pytest

from glmkit.errors import ContrastError, DataFileNotFoundError, GlmkitError, ParameterError
from glmkit.settings import RunSettings, packaged_notebook, read_params_file


def test_defaults_are_the_reference_analysis():
    s = RunSettings()
    assert s.dataset == "demo"
    assert s.covariates == ("pseudo",)
    assert s.rename == {"pseudo": "fluency"}
    assert s.contrast == "fluency"
    assert s.smoothing_fwhm == 5.0
    assert s.alpha == 0.05 and s.height_control == "fdr"
    assert s.two_sided is False and s.statistics == ("voxel",)
    assert s.cut_coords == (38.0, -17.0, -3.0)
    assert isinstance(s.random_state, int)
    assert s.notebook_path == packaged_notebook()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("n_perm", "1000", 1000),
        ("n_perm", "1_000", 1000),
        ("alpha", "0.01", 0.01),
        ("smoothing_fwhm", "none", None),
        ("smoothing_fwhm", "0", 0.0),
        ("two_sided", "true", True),
        ("two_sided", "No", False),
        ("center", 1, True),
        ("statistics", "voxel,tfce", ("voxel", "tfce")),
        ("statistics", "[voxel, cluster_size]", ("voxel", "cluster_size")),
        ("statistics", "", ()),
        ("statistics", ["voxel"], ("voxel",)),
        ("cut_coords", "0,-52,18", (0.0, -52.0, 18.0)),
        ("cut_coords", [1, 2, 3], (1.0, 2.0, 3.0)),
        ("rename", "{pseudo: reading}", {"pseudo": "reading"}),
        ("tfce", "{E: 0.5, H: 2}", {"E": 0.5, "H": 2}),
        ("tfce", "null", None),
        ("tfce", "true", True),
        ("tfce", "false", None),
        ("run_name", 2024, "2024"),
        ("height_control", "none", None),
        ("n_jobs", "-1", -1),
        ("random_state", 7.0, 7),
    ],
)
def test_strings_are_coerced(name, text, expected):
    changes = {name: text}
    if name == "rename":
        changes["contrast"] = "reading"
    assert getattr(RunSettings(**changes), name) == expected


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_perm": 0}, r"n_perm=0 is out of range: expected n_perm >= 1"),
        ({"n_perm": "many"}, r"n_perm='many' has the wrong type: expected an integer"),
        ({"n_perm": 2.5}, r"n_perm=2.5 has the wrong type"),
        ({"alpha": 0}, r"alpha=0.0 is out of range: expected 0 < alpha < 1"),
        ({"alpha": 1.5}, r"alpha=1.5 is out of range: expected 0 < alpha < 1"),
        ({"alpha": True}, r"alpha=True has the wrong type"),
        ({"cluster_threshold": 1}, r"cluster_threshold=1.0 is out of range"),
        ({"smoothing_fwhm": -1}, r"smoothing_fwhm=-1.0 is out of range: expected a FWHM"),
        ({"n_jobs": 0}, r"n_jobs=0 is not allowed"),
        ({"run_name": "a/b"}, r"run_name='a/b' is not a safe folder name"),
        ({"run_name": ".."}, r"run_name='..' is not a safe folder name"),
        ({"run_name": "x..y"}, r"not a safe folder name"),
        ({"run_name": ""}, r"run_name='' is not a safe folder name"),
        ({"run_name": "a\\b"}, r"not a safe folder name"),
        ({"statistics": "voxel,tfec"},
         r"statistics='tfec' is not a known statistic.*did you mean 'tfce'"),
        ({"statistics": "voxel,voxel"}, r"repeats a statistic"),
        ({"height_control": "fwe"}, r"height_control='fwe' is not a known value: expected "
                                    r"one of \['fdr', 'bonferroni', 'fpr', 'none'\]"),
        ({"scheme": "freedman"}, r"scheme='freedman'.*did you mean 'freedman_lane'"),
        ({"contrast": " "}, r"contrast is empty"),
        ({"dataset": "dmeo"}, r"dataset='dmeo' is neither.*did you mean 'demo'"),
        ({"two_sided": "maybe"}, r"two_sided='maybe' has the wrong type: expected true or false"),
        ({"cut_coords": "1,2"}, r"expected three numbers x,y,z in mm, found 2"),
        ({"rename": "[a, b]"}, r"rename=.* has the wrong type: expected a mapping"),
        ({"n_subjects": 0}, r"n_subjects=0 is out of range"),
    ],
)
def test_bad_values_name_parameter_and_range(changes, match):
    with pytest.raises(ParameterError, match=match):
        RunSettings(**changes)


def test_tfce_options_add_the_tfce_statistic():
    assert RunSettings(tfce=True).statistics == ("voxel", "tfce")
    assert RunSettings(tfce={"E": 1.0}, statistics="tfce").statistics == ("tfce",)
    with pytest.raises(ParameterError, match="tfce=3 has the wrong type: expected none, true"):
        RunSettings(tfce=3)


def test_table_must_exist(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"table=.*does not exist: expected a TSV/CSV"):
        RunSettings(dataset=str(tmp_path), table=str(tmp_path / "nope.tsv"))


def test_folder_dataset_accepted(tmp_path):
    (tmp_path / "t.tsv").write_text("subject\tpseudo\n")
    s = RunSettings(dataset=str(tmp_path), table=str(tmp_path / "t.tsv"), covariates="pseudo",
                    contrast="pseudo")
    assert s.dataset == str(tmp_path)
    assert s.rename == {} and s.cut_coords is None  # the demo's are not a folder's


def test_formula_skips_static_contrast_check():
    s = RunSettings(formula="pseudo + age", contrast="pseudo")
    assert s.design_variables() == ("pseudo", "age")


# ------------------------------------------------------------------ contrast
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2*fluency", "2*fluency"),
        (" fluency - intercept ", "fluency - intercept"),
        ("[1, 0]", (1.0, 0.0)),
        (" [1, -0.5] ", (1.0, -0.5)),
        ([1, 0], (1.0, 0.0)),
        ((0.5, 0), (0.5, 0.0)),
    ],
)
def test_contrast_is_an_expression_or_a_vector(value, expected):
    s = RunSettings(contrast=value)
    assert s.contrast == expected
    again = RunSettings(**json.loads(json.dumps(s.to_dict())))  # params.json, papermill
    assert again == s and again.contrast == expected


def test_numpy_vector_contrast():
    np = pytest.importorskip("numpy")
    assert RunSettings(contrast=np.array([1, 0])).contrast == (1.0, 0.0)


def test_contrast_vector_from_yaml_and_cli_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("contrast: [1, 0]\n")
    assert RunSettings.from_yaml(path).contrast == (1.0, 0.0)
    assert RunSettings.from_mapping({"contrast": "[0, 1]"}).contrast == (0.0, 1.0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"contrast": "pseudo - pseudo", "rename": {}},
         r"^contrast 'pseudo - pseudo' is all zeros \(pseudo: 0\): it tests nothing, whatever "
         r"the design; give at least one non-zero weight, e.g. 'pseudo'.$"),
        ({"contrast": "0*fluency"}, r"contrast '0\*fluency' is all zeros \(fluency: 0\)"),
        # the symbolic step needs no design: caught with a formula too
        ({"contrast": "age - age", "formula": "pseudo + age"}, r"'age - age' is all zeros"),
        ({"contrast": "fluency * intercept"}, "multiplies two columns"),
        ({"contrast": "[0, 0]"}, r"contrast '\[0, 0\]' is all zeros"),
        ({"contrast": "[fluency, intercept]", "two_sided": True},
         r"^contrast 'fluency, intercept' is a list of contrasts, an F test, and two_sided=true "
         r"has no meaning for it"),
        ({"contrast": [[1, 0], [0, 1]], "within": "session", "covariates": ()},
         r"a repeated-measures F test is not supported"),
    ],
)
def test_bad_contrasts_are_contrast_and_parameter_errors(changes, match):
    """What no design can rescue fails here; names and weight counts are checked against the
    table's design before any map is read (tests/test_designs.py, tests/test_cli.py)."""
    with pytest.raises(ContrastError, match=match) as info:
        RunSettings(**changes)
    assert isinstance(info.value, ParameterError)  # what the CLI reports as a usage error


@pytest.mark.parametrize("value", [{"a": 1}, True, "[1, 0"])  # None: the dataset's
def test_contrast_of_the_wrong_type(value):
    with pytest.raises(ParameterError, match=r"contrast(=.* has the wrong type| is none): "
                                             r"expected a design column"):
        RunSettings(contrast=value)


def test_unknown_name_lists_known_ones_with_suggestion():
    with pytest.raises(ParameterError) as info:
        RunSettings.from_mapping({"n_prem": 10})
    message = str(info.value)
    assert "unknown parameter 'n_prem'" in message
    assert "did you mean 'n_perm'" in message
    for name in RunSettings.field_names():
        assert name in message


def test_unknown_name_without_close_match():
    with pytest.raises(ParameterError,
                       match=r"unknown parameter 'bogus' - known parameters: dataset"):
        RunSettings.from_mapping({"bogus": 1})


def test_dashes_and_underscores_both_work():
    s = RunSettings.from_mapping({"n-perm": "50", "--two-sided": "yes"}, run_name="x")
    assert (s.n_perm, s.two_sided, s.run_name) == (50, True, "x")


def test_frozen():
    s = RunSettings()
    with pytest.raises(AttributeError):
        s.n_perm = 3  # type: ignore[misc]
    assert s.replace(n_perm=3).n_perm == 3
    with pytest.raises(ParameterError):
        s.replace(n_perm=-3)


def test_to_dict_round_trips_through_json():
    s = RunSettings(n_perm=77, statistics=("voxel", "tfce"), tfce={"E": 0.5})
    data = json.loads(json.dumps(s.to_dict()))
    assert RunSettings(**data) == s
    assert "output_dir" not in s.to_dict(runner=False)
    assert "notebook" not in json.loads(s.to_json())


def test_from_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("n_perm: 100\nstatistics: [voxel, cluster_size]\nsmoothing_fwhm: null\n")
    s = RunSettings.from_yaml(path, run_name="y")
    assert (s.n_perm, s.statistics, s.smoothing_fwhm, s.run_name) == (
        100, ("voxel", "cluster_size"), None, "y")


def test_yaml_missing_file(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"params file .*nope.yaml' does not exist"):
        RunSettings.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", r"holds a list, expected a mapping of parameter names"),
        ("just text", r"holds a str, expected a mapping"),
        ("a: [1,\n", r"is not valid YAML"),
        ("n_perm: 100\nbogus: 1\n", r"unknown parameter 'bogus'"),
        ("alpha: 5\n", r"alpha=5.0 is out of range"),
    ],
)
def test_yaml_bad_content(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(GlmkitError, match=match):
        RunSettings.from_yaml(path)


def test_empty_yaml_is_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("")
    assert read_params_file(path) == {}


# ------------------------------------------------------------------ declarations
def test_every_field_declares_a_kind_and_its_own_help():
    from glmkit.settings import parameters

    declared = parameters()
    assert [p.name for p in declared] == list(RunSettings.field_names())
    for p in declared:
        assert p.expects  # a known kind
        assert p.help.strip() and p.help != p.expects, p.name
        assert "$" not in p.markdown, p.name  # every $choice filled in
        assert p.name in RunSettings.__doc__, p.name  # the docstring is generated from them


@pytest.mark.parametrize("name", RunSettings.field_names())
def test_shown_default_is_taken_back_as_the_default(name):
    """The default printed by --help and the README, given back as a flag value, is the
    default (so what they show is true)."""
    from glmkit.settings import parameters

    p = next(p for p in parameters() if p.name == name)
    again = RunSettings(**{name: p.default_text}).to_dict()[name]
    assert again == RunSettings().to_dict()[name], (name, p.default_text)


def test_runner_fields_and_notebook_parameters_come_from_the_declarations():
    from glmkit.settings import RUNNER_FIELDS

    assert set(RUNNER_FIELDS) == {"output_dir", "notebook", "force"}
    assert set(RunSettings.field_names()) - set(RunSettings.notebook_parameters()) == {"force"}
    assert not set(RUNNER_FIELDS) & set(json.loads(RunSettings().to_json()))


def test_parameter_table_has_a_row_per_flag_in_field_order():
    from glmkit.settings import parameter_table

    rows = parameter_table().splitlines()
    names = [row.split("|")[1].strip().strip("`") for row in rows[2:]]
    assert names == [n for n in RunSettings.field_names() if n != "output_dir"]
    assert "| `n_perm` | 5000 |" in parameter_table()


# ------------------------------------------------------------------ from_namespace
def test_from_namespace_takes_parameters_and_ignores_other_names():
    namespace = {"n_perm": "50", "statistics": ["voxel", "tfce"], "run_name": "ns",
                 "np": object(), "settings": None, "_": 3, "n_prem": 7}
    s = RunSettings.from_namespace(namespace)
    assert (s.n_perm, s.statistics, s.run_name) == (50, ("voxel", "tfce"), "ns")
    # every name not given keeps its default
    assert s == RunSettings(n_perm=50, statistics=("voxel", "tfce"), run_name="ns")


def test_from_namespace_missing_parameters_take_their_defaults():
    values = RunSettings().to_dict()
    for dropped in ("groups", "cut_coords", "output_dir"):
        del values[dropped]
    assert RunSettings.from_namespace(values) == RunSettings()
    assert RunSettings.from_namespace({}) == RunSettings()


def test_from_namespace_overrides_and_errors():
    assert RunSettings.from_namespace({"n_perm": 5}, n_perm=6).n_perm == 6
    with pytest.raises(ParameterError, match="n_perm=0 is out of range"):
        RunSettings.from_namespace({"n_perm": 0})
    with pytest.raises(ParameterError, match="expects a mapping .* found list"):
        RunSettings.from_namespace([("n_perm", 5)])


@pytest.mark.parametrize("changes, expected", [
    ({"covariates": "", "contrast": "intercept"}, ((), "intercept")),
    ({"contrast": "[fluency, intercept]"}, (("pseudo",), ("fluency", "intercept"))),
    ({"contrast": "[1, 0, 0]"}, (("pseudo",), (1.0, 0.0, 0.0))),
    ({"contrast": "fluensy"}, (("pseudo",), "fluensy")),
], ids=["one-sample", "F-test", "weights", "name-checked-later"])
def test_designs_settings_accept(changes, expected):
    s = RunSettings(**changes)
    assert (s.covariates, s.contrast) == expected


@pytest.mark.parametrize("changes", [
    {},
    {"covariates": "", "contrast": "intercept", "rename": {}, "mask": "mni152",
     "qc": {"exclude": ["coverage"], "keep": ["S01"]}, "two_sided": True, "n_perm": 99},
    {"covariates": "sex,pseudo", "rename": {}, "contrast": "M - F", "smoothing_fwhm": "none",
     "statistics": "", "tfce": {"E": 1.0, "H": 2.0}, "cut_coords": "1,2,3"},
    {"covariates": "pseudo,age", "contrast": "[pseudo, age]", "rename": {},
     "scheme": "sign_flip"},
    {"contrast": "[1, 0]", "run_name": "it's a run", "groups": "site"},
], ids=["defaults", "one-sample", "groups", "F", "quoting"])
def test_command_line_reproduces_the_settings(changes):
    """The report's command, read back as glmkit run reads its flags, gives the same settings."""
    import shlex

    settings = RunSettings(**changes)
    argv = shlex.split(settings.command_line())
    assert argv[:2] == ["glmkit", "run"]
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert all(k.startswith("--") for k in flags) and len(argv[2:]) == 2 * len(flags)
    again = RunSettings.from_mapping({k[2:]: v for k, v in flags.items()})
    assert again.to_dict(runner=False) == settings.to_dict(runner=False)
