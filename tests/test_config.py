"""Project model: the MARS sample loads, init writes a valid project, bad configs say what to fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bot.errors import ConfigError, NotFoundError
from bot.project import load_project, require_job_identity
from bot.project.aws_rules import bucket_name_problem
from bot.recipe import init_project
from bot.settings import Settings

SAMPLES = Path(__file__).parent / "samples"


def _write(tmp_path: Path, data: dict | str, name: str = "proj") -> Path:
    project = tmp_path / name
    project.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (project / "project-config.yml").write_text(text)
    return project


def _sample() -> dict:
    return yaml.safe_load((SAMPLES / "project-config.yml").read_text())


def test_mars_sample_loads_unchanged(tmp_path: Path) -> None:
    project_dir = tmp_path / "demo-mice"
    project_dir.mkdir()
    shutil.copy(SAMPLES / "project-config.yml", project_dir / "project-config.yml")
    project = load_project(tmp_path, "demo-mice")
    assert project.labels[0] == "black mouse nose"
    assert len(project.labels) == 14
    assert project.output_bucket == "lab-frames-output"
    assert project.check_pairs == (("right ear", "left ear"), ("right rear knee", "left rear knee"))
    assert project.job.workers_per_image == 5
    assert project.job.workteam_kind == "private"
    assert require_job_identity(project)[0].startswith("arn:aws:iam::")


def test_mars_file_name_and_unknown_mars_keys_are_accepted(tmp_path: Path) -> None:
    data = _sample()
    data["tfrecord_shards"] = 8  # MARS settings gtbot does not use
    data["verbose"] = True
    project_dir = tmp_path / "mars"
    project_dir.mkdir()
    (project_dir / "project_config.yaml").write_text(yaml.safe_dump(data))
    assert load_project(tmp_path, "mars").species == "mouse"


def test_init_writes_a_valid_commented_project_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = init_project(tmp_path, "new-lab", region="us-west-2")
    text = result.config_file.read_text()
    assert "# " in text and "check_pairs" in text
    assert (result.path / "annotation-data" / "raw-images").is_dir()
    project = load_project(tmp_path, "new-lab")
    assert project.region == "us-west-2"
    assert project.keypoints[0] == "nose" and len(project.keypoints) == 7
    assert project.animal_names == ("black", "white")
    with pytest.raises(ConfigError, match="will not overwrite"):
        init_project(tmp_path, "new-lab")
    assert result.config_file.read_text() == text


def test_missing_project_and_missing_config(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="init nothing"):
        load_project(tmp_path, "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no project-config.yml"):
        load_project(tmp_path, "empty")


def test_lab_defaults_from_env_and_gtbot_yml(tmp_path: Path) -> None:
    data = _sample()
    del data["job"]["role_arn"], data["job"]["workteam_arn"]
    _write(tmp_path, data)
    lab = tmp_path / "gtbot.yml"
    lab.write_text(
        "job:\n  role_arn: arn:aws:iam::111122223333:role/LabRole\n"
        "  workteam_arn: arn:aws:sagemaker:us-east-2:111122223333:workteam/private-crowd/lab\n"
    )
    settings = Settings.from_env(
        {"GTBOT_CONFIG": str(lab), "GTBOT_ROLE_ARN": "arn:aws:iam::999988887777:role/EnvRole"}
    )
    project = load_project(tmp_path, "proj", settings.lab_job_defaults)
    assert project.job.role_arn == "arn:aws:iam::999988887777:role/EnvRole"  # env wins
    assert project.job.workteam_arn.endswith("private-crowd/lab")
    bare = load_project(tmp_path, "proj", {})
    with pytest.raises(ConfigError, match="GTBOT_ROLE_ARN"):
        require_job_identity(bare)


def _set(path: str, value: object) -> object:
    def change(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()

BAD_CONFIGS = [
    # (name, change, expected fragment: key, line or what to write)
    ("missing species", _set("species", _DELETE), "key `species`: missing"),
    ("species not text", _set("species", ["mouse"]), "key `species`: must be non-empty text"),
    ("animal_names not list", _set("animal_names", "black"), "key `animal_names`: must be a list"),
    ("duplicate animals", _set("animal_names", ["a", "a"]), "names must be different"),
    ("animal_names missing", _set("animal_names", _DELETE), "key `animal_names`: missing"),
    (
        "label_map target unknown",
        _set("label_map", {"nose": "grey mouse nose"}),
        "key `label_map.nose`: maps to 'grey mouse nose', which is not a label",
    ),
    ("num_obj zero", _set("num_obj", 0), "key `num_obj`: must be a whole number of at least 1"),
    ("num_obj text", _set("num_obj", "two"), "key `num_obj`"),
    ("duplicate keypoint", _set("keypoints", ["nose", "tail", "nose"]), "'nose' is listed twice"),
    ("keypoints missing", _set("keypoints", _DELETE), "key `keypoints`: missing"),
    (
        "pair not in keypoints",
        _set("check_pairs", [["right ear", "left eer"]]),
        "'left eer' is not in `keypoints`. Did you mean 'left ear'?",
    ),
    (
        "pair of three",
        _set("check_pairs", [["nose", "right ear", "left ear"]]),
        "must be a pair like",
    ),
    ("pair with itself", _set("check_pairs", [["nose", "nose"]]), "pairs a keypoint with itself"),
    ("bucket uppercase", _set("data_bucket", "Lab_Frames"), "may only contain lowercase letters"),
    ("bucket too short", _set("template_bucket", "ab"), "S3 bucket names have 3 to 63"),
    ("bucket ip", _set("data_bucket", "192.168.1.1"), "looks like an IP address"),
    ("bucket double dot", _set("data_bucket", "lab..frames"), "two dots in a row"),
    ("bucket reserved prefix", _set("data_bucket", "xn--frames"), "starts with 'xn--'"),
    ("output too long", _set("data_bucket", "a" * 60), "the output bucket is named after it"),
    ("same buckets", _set("template_bucket", "lab-frames"), "three different buckets"),
    ("bad region", _set("region", "us-east-9"), "'us-east-9' is not an AWS region"),
    ("region typo", _set("region", "useast-2"), "Did you mean 'us-east-2'?"),
    (
        "workteam arn form",
        _set("job.workteam_arn", "my-team"),
        "key `job.workteam_arn`: 'my-team' is not an ARN of the right form",
    ),
    ("role arn form", _set("job.role_arn", "arn:aws:iam::123:role/x"), "key `job.role_arn`"),
    (
        "workteam other region",
        _set(
            "job.workteam_arn", "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/t"
        ),
        "the workteam is in eu-west-1",
    ),
    ("workers 0", _set("job.workers_per_image", 0), "0 is outside 1..9"),
    (
        "workers 12",
        _set("job.workers_per_image", 12),
        "12 is outside 1..9. Write a number from 1 to 9",
    ),
    ("time limit short", _set("job.task_time_limit_seconds", 10), "10 is outside 30..28800"),
    ("time limit long", _set("job.task_time_limit_seconds", 30000), "30000 is outside 30..28800"),
    ("availability", _set("job.task_availability_seconds", 10), "10 is outside 60..2592000"),
    ("price on private team", _set("job.price_usd", 0.036), "a private workteam takes no price"),
    (
        "unknown job key",
        _set("job.workers_per_imag", 3),
        "unknown job setting. Did you mean `workers_per_image`?",
    ),
    ("typo of top key", _set("check_pair", []), "unknown key; did you mean `check_pairs`?"),
    ("title too long", _set("job.title", "x" * 129), "at most 128"),
    ("description too long", _set("job.description", "x" * 256), "at most 255"),
    ("too many keywords", _set("job.keywords", ["a", "b", "c", "d", "e", "f"]), "1 to 5 keywords"),
    ("bad keyword", _set("job.keywords", ["pose!"]), "'pose!' is not allowed"),
    ("bad lambda", _set("job.pre_lambda_arn", "lambda-pre"), "key `job.pre_lambda_arn`"),
]


@pytest.mark.parametrize(
    ("name", "change", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_reported_with_file_line_key_and_fix(
    tmp_path: Path, name: str, change: object, expected: str
) -> None:
    data = _sample()
    change(data)  # type: ignore[operator]
    project_dir = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, "proj")
    message = info.value.user_message
    assert expected in message
    assert str(project_dir / "project-config.yml") in message
    if ": missing" not in expected:  # an absent key has no line; the file is named instead
        assert ", line " in message


PUBLIC = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (None, "the public crowd needs a price per task"),
        (0.05, "0.05 is not a price the public crowd accepts"),
        ("cheap", "must be a number of US dollars"),
    ],
)
def test_public_crowd_price_rules(tmp_path: Path, price: object, expected: str) -> None:
    data = _sample()
    data["job"]["workteam_arn"] = PUBLIC
    if price is not None:
        data["job"]["price_usd"] = price
    _write(tmp_path, data)
    with pytest.raises(ConfigError, match=expected):
        load_project(tmp_path, "proj")


def test_public_crowd_availability_cap(tmp_path: Path) -> None:
    data = _sample()
    data["job"].update(workteam_arn=PUBLIC, price_usd=0.036, task_availability_seconds=86400)
    _write(tmp_path, data)
    with pytest.raises(ConfigError, match="at most 43200"):
        load_project(tmp_path, "proj")


def test_all_problems_reported_at_once_with_their_lines(tmp_path: Path) -> None:
    text = (SAMPLES / "project-config.yml").read_text()
    text = text.replace("workers_per_image: 5", "workers_per_image: 12").replace(
        "region: us-east-2", "region: mars-1"
    )
    _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, "proj")
    message = info.value.user_message
    assert "2 problems" in message
    lines = text.splitlines()
    region_line = next(i for i, line in enumerate(lines, 1) if line.startswith("region:"))
    workers_line = next(i for i, line in enumerate(lines, 1) if "workers_per_image" in line)
    assert f"line {region_line}, key `region`" in message
    assert f"line {workers_line}, key `job.workers_per_image`" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "species: mouse\nkeypoints: [nose, ear\nregion: x\n")
    with pytest.raises(ConfigError, match=r"line \d+: this is not valid YAML"):
        load_project(tmp_path, "proj")


def test_project_names_cannot_escape_the_projects_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid project name"):
        load_project(tmp_path, "../etc")


# S3's general-purpose bucket naming rules
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html), each at its edge.
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("abc", None),
        ("a" * 63, None),
        ("my-lab.frames-2026", None),
        ("1ab", None),
        ("ab", "'ab' is 2 characters long; S3 bucket names have 3 to 63."),
        ("a" * 64, f"'{'a' * 64}' is 64 characters long; S3 bucket names have 3 to 63."),
        ("My-lab", "'My-lab' may only contain lowercase letters, digits, dots and hyphens."),
        ("my_lab", "'my_lab' may only contain lowercase letters, digits, dots and hyphens."),
        ("-mylab", "'-mylab' must begin and end with a lowercase letter or a digit."),
        ("mylab-", "'mylab-' must begin and end with a lowercase letter or a digit."),
        (".mylab", "'.mylab' must begin and end with a lowercase letter or a digit."),
        ("my..lab", "'my..lab' has two dots in a row."),
        ("192.168.5.4", "'192.168.5.4' looks like an IP address, which S3 does not allow."),
        ("xn--lab", "'xn--lab' starts with 'xn--', which S3 reserves."),
        ("sthree-lab", "'sthree-lab' starts with 'sthree-', which S3 reserves."),
        ("amzn-s3-demo-lab", "'amzn-s3-demo-lab' starts with 'amzn-s3-demo-', which S3 reserves."),
        ("lab-s3alias", "'lab-s3alias' ends with '-s3alias', which S3 reserves."),
        ("lab--ol-s3", "'lab--ol-s3' ends with '--ol-s3', which S3 reserves."),
        ("lab.mrap", "'lab.mrap' ends with '.mrap', which S3 reserves."),
        ("lab--x-s3", "'lab--x-s3' ends with '--x-s3', which S3 reserves."),
        ("lab--table-s3", "'lab--table-s3' ends with '--table-s3', which S3 reserves."),
    ],
)
def test_bucket_names_follow_s3s_rules_at_each_edge(name: str, problem: str | None) -> None:
    assert bucket_name_problem(name) == problem


def test_the_messages_of_a_project_that_cannot_be_found_or_read_say_how_to_fix_it(
    tmp_path: Path,
) -> None:
    """Word for word: these are what a lab manager reads when a project is not there."""
    with pytest.raises(ConfigError) as bad_name:
        load_project(tmp_path, "Mouse_Pose")
    assert bad_name.value.user_message == (
        "'Mouse_Pose' is not a valid project name. Use 1 to 40 lowercase letters, digits and "
        "hyphens, starting and ending with a letter or digit (it becomes part of S3 keys and "
        "job names), e.g. `mouse-pose`."
    )
    with pytest.raises(NotFoundError) as missing:
        load_project(tmp_path, "mice")
    assert missing.value.user_message == (
        f"There is no project 'mice' in {tmp_path}. Create it with `init mice`, or set "
        "GTBOT_PROJECTS_DIR to the folder that holds your projects."
    )
    (tmp_path / "mice").mkdir()
    with pytest.raises(NotFoundError) as no_config:
        load_project(tmp_path, "mice")
    assert no_config.value.user_message == (
        f"{tmp_path / 'mice'} has no project-config.yml (nor MARS's project_config.yaml). "
        "Run `init mice` in an empty folder to get a commented one."
    )
    (tmp_path / "mice" / "project-config.yml").write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError) as not_a_mapping:
        load_project(tmp_path, "mice")
    assert not_a_mapping.value.user_message == (
        f"{tmp_path / 'mice' / 'project-config.yml'}: expected `key: value` lines (a mapping), "
        "found list. Start from `init` for a commented example."
    )


def _problems(tmp_path: Path, text: str) -> list[str]:
    """Each problem line of a config's message, the file's path cut to `F`."""
    _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path, "proj")
    file = str(tmp_path / "proj" / "project-config.yml")
    head, *items = info.value.user_message.replace(file, "F").split("\n- ")
    assert head == f"F has {len(items)} problem{'s' if len(items) > 1 else ''}:"
    return items


LABELS = "species: mouse\nanimal_names: []\nkeypoints: [nose, tail]\n"


def test_project_problems_word_for_word(tmp_path: Path) -> None:
    text = (
        "species: mouse\n5: five\nregoin: us-east-2\nkeypoints: [nose, tail]\n"
        'template_bucket: ""\nregion: us-est-1\nheader: 5\ninstruction_image: notes.txt\n'
        "short_instructions: [a]\nfull_instructions: ' '\nanimal_names: []\n"
    )
    assert _problems(tmp_path, text) == [
        "F, line 2, key `5`: keys must be text.",
        "F, line 3, key `regoin`: unknown key; did you mean `region`?",
        "F, key `data_bucket`: missing. Add it to the file, e.g. "
        "`data_bucket: lab-mouse-sagemaker`.",
        "F, line 5, key `template_bucket`: must be non-empty text, found ''. Example: "
        "`template_bucket: lab-mouse-sagemaker-ui`.",
        "F, line 6, key `region`: 'us-est-1' is not an AWS region with SageMaker. Did you "
        "mean 'us-west-1'?",
        "F, line 7, key `header`: must be non-empty text, found 5. Example: "
        "`header: Label body parts of the two mice.`.",
        "F, line 9, key `short_instructions`: must be non-empty text, found ['a']. Example: "
        "`short_instructions: Click on each body part.`.",
        "F, line 10, key `full_instructions`: must be non-empty text, found ' '. Example: "
        "`full_instructions: <p>Detailed instructions</p>`.",
        "F, line 8, key `instruction_image`: must be the path of a .png/.jpg/.gif file in the "
        "project, found 'notes.txt'.",
    ]


def test_bucket_problems_word_for_word(tmp_path: Path) -> None:
    bad = bucket_name_problem("Lab_Frames")
    long_data = "l" * 57  # fits, but `<it>-output` is 64 characters
    long_problem = bucket_name_problem(long_data + "-output")
    assert bad and long_problem and bucket_name_problem(long_data) is None
    region = "region: mars-1\n"
    assert _problems(
        tmp_path, LABELS + f"data_bucket: Lab_Frames\ntemplate_bucket: Lab_Frames\n{region}"
    ) == [
        f"F, line 4, key `data_bucket`: {bad} Example: `lab-mouse-sagemaker`.",
        f"F, line 5, key `template_bucket`: {bad} Example: `lab-mouse-sagemaker`.",
        "F, line 5, key `template_bucket`: data, output and template buckets must be three "
        "different buckets.",
        "F, line 6, key `region`: 'mars-1' is not an AWS region with SageMaker. Example: "
        "`region: us-east-1`.",
    ]
    assert _problems(
        tmp_path, LABELS + f"data_bucket: {long_data}\ntemplate_bucket: lab-ui\n{region}"
    )[0] == (
        f"F, line 4, key `data_bucket`: the output bucket is named after it "
        f"('{long_data}-output'): {long_problem} Shorten data_bucket or set output_bucket."
    )
    # A bad data bucket is reported once, not again through the output bucket named after it.
    assert _problems(
        tmp_path, LABELS + "data_bucket: Lab_Frames\ntemplate_bucket: lab-ui\nregion: us-east-2\n"
    ) == [f"F, line 4, key `data_bucket`: {bad} Example: `lab-mouse-sagemaker`."]
    assert _problems(
        tmp_path,
        LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\noutput_bucket: Lab_Out\n"
        "region: us-east-2\n",
    ) == [f"F, line 6, key `output_bucket`: {bucket_name_problem('Lab_Out')}"]
    assert _problems(
        tmp_path,
        LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\noutput_bucket: lab-a\n"
        "region: us-east-2\n",
    ) == [
        "F, line 5, key `template_bucket`: data, output and template buckets must be three "
        "different buckets."
    ]


def test_a_valid_project_and_its_defaults(tmp_path: Path) -> None:
    _write(tmp_path, LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\nregion: us-east-2\n")
    project = load_project(tmp_path, "proj")
    assert (project.data_bucket, project.template_bucket, project.output_bucket) == (
        "lab-a",
        "lab-b",
        "lab-a-output",
    )
    assert (project.header, project.short_instructions, project.full_instructions) == (
        "Label the body parts of each animal.",
        "Click on each body part of each animal.",
        "<p>Click on each body part of each animal.</p>",
    )
    assert project.instruction_image is None and project.region == "us-east-2"
    assert (project.species, project.animal_names, project.keypoints) == (
        "mouse",
        (),
        ("nose", "tail"),
    )
    assert (project.num_obj, project.check_pairs, project.label_map) == (1, (), ())
    assert (project.name, project.path) == ("proj", tmp_path / "proj")
    assert project.config_file == tmp_path / "proj" / "project-config.yml"


def test_instruction_images_word_for_word(tmp_path: Path) -> None:
    base = LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\nregion: us-east-2\n"
    (tmp_path / "outside.png").write_bytes(b"png")
    assert _problems(tmp_path, base + "instruction_image: ../outside.png\n") == [
        "F, line 7, key `instruction_image`: '../outside.png' is outside the project folder. "
        "Put the image in the project (e.g. `instruction_image: instructions.png`) and give its "
        "path from there."
    ]
    missing = tmp_path / "proj" / "how.JPG"
    assert _problems(tmp_path, base + "instruction_image: how.JPG\n") == [
        f"F, line 7, key `instruction_image`: {missing} does not exist. Put the image there or "
        "remove the key to use the default."
    ]
    assert _problems(tmp_path, base + "instruction_image: 5\n") == [
        "F, line 7, key `instruction_image`: must be the path of a .png/.jpg/.gif file in the "
        "project, found 5."
    ]
    for name in ("how.JPG", "a.jpeg", "b.gif", "c.png"):
        (tmp_path / "proj" / name).write_bytes(b"img")
        _write(tmp_path, base + f"instruction_image: {name}\n")
        assert load_project(tmp_path, "proj").instruction_image == tmp_path / "proj" / name


def test_required_keys_and_an_output_bucket_that_is_not_text(tmp_path: Path) -> None:
    assert _problems(tmp_path, LABELS + "data_bucket: lab-a\noutput_bucket: 5\n") == [
        "F, key `template_bucket`: missing. Add it to the file, e.g. "
        "`template_bucket: lab-mouse-sagemaker-ui`.",
        "F, line 5, key `output_bucket`: must be non-empty text, found 5. Example: "
        "`output_bucket: lab-mouse-sagemaker-output`.",
        "F, key `region`: missing. Add it to the file, e.g. `region: us-east-1`.",
    ]


def test_an_instruction_image_that_is_a_link_loop_is_refused(tmp_path: Path) -> None:
    base = LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\nregion: us-east-2\n"
    _write(tmp_path, base)
    (tmp_path / "proj" / "a.png").symlink_to("b.png")
    (tmp_path / "proj" / "b.png").symlink_to("a.png")
    assert _problems(tmp_path, base + "instruction_image: a.png\n") == [
        "F, line 7, key `instruction_image`: 'a.png' is outside the project folder. Put the "
        "image in the project (e.g. `instruction_image: instructions.png`) and give its path "
        "from there."
    ]


def test_a_label_map_reaches_the_project(tmp_path: Path) -> None:
    _write(
        tmp_path,
        LABELS + "data_bucket: lab-a\ntemplate_bucket: lab-b\nregion: us-east-2\n"
        "label_map: {Nose tip: nose}\n",
    )
    assert load_project(tmp_path, "proj").label_map == (("Nose tip", "nose"),)
