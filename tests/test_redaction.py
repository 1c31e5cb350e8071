"""Passwords out of everything printed or logged: URLs whatever the password's characters, secret query and
connection-string parameters, and the configured URLs' secrets wherever a driver quotes them; ordinary text
passes unchanged.

The end-to-end checks (every output line, artifact, param and tag of real runs) are in ``test_scaleout.py``.
"""
from __future__ import annotations

import json

import pytest

from hpo.config import StudyConfig
from hpo.execution import WorkerJob
from hpo.redaction import redact, register_secrets
from tests.helpers import study_dict

# Every secret below is unique to its test: the registered ones stay registered for the whole test session.
URLS = {
    "plain": ("postgresql+psycopg2://bob:s3cret@db:5432/optuna", "postgresql+psycopg2://bob:***@db:5432/optuna"),
    "@ in the password": ("postgresql://u:TOP@SECRET@host/db", "postgresql://u:***@host/db"),
    ": and %40 in the password": ("postgresql://u:pa:ss%40wd@host:5432/db", "postgresql://u:***@host:5432/db"),
    "/ and ? in the password": ("mysql://u:pa/s?s@host/db", "mysql://u:***@host/db"),
    "MLflow server": ("http://u:p@ss@mlflow:5000", "http://u:***@mlflow:5000"),
    "no user": ("redis://:hunter42@cache:6379/0", "redis://:***@cache:6379/0"),
    "IPv6 host": ("postgresql://u:a@b@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    "@ in the query, not the password": ("postgresql://u:pw@host/db?application_name=hpo@box",
                                         "postgresql://u:***@host/db?application_name=hpo@box"),
    "in a message": ("cannot connect to postgresql://u:x@y@h/db: refused; retry http://v:z@w:1 later",
                     "cannot connect to postgresql://u:***@h/db: refused; retry http://v:***@w:1 later"),
    "in JSON": ('{"storage": "postgresql://u:x@y@h", "n": 1}', '{"storage": "postgresql://u:***@h", "n": 1}'),
}


@pytest.mark.parametrize("text, redacted", URLS.values(), ids=URLS)
def test_the_password_of_a_url_is_redacted_whatever_its_characters(text: str, redacted: str) -> None:
    assert redact(text) == redacted


PARAMETERS = {
    "password": ("postgresql://u@host/db?password=SECRET", "postgresql://u@host/db?password=***"),
    "sslpassword among others": ("postgresql://u@h/db?sslmode=require&sslpassword=K3y%40pass&application_name=hpo",
                                 "postgresql://u@h/db?sslmode=require&sslpassword=***&application_name=hpo"),
    "MySQL's passwd": ("mysql+pymysql://u@h/db?charset=utf8&passwd=x!y",
                       "mysql+pymysql://u@h/db?charset=utf8&passwd=***"),
    "ODBC's PWD": ("DRIVER={ODBC Driver 18};UID=u;PWD=s3cr3t;Encrypt=yes",
                   "DRIVER={ODBC Driver 18};UID=u;PWD=***;Encrypt=yes"),
    "libpq key/value": ("host=h password=se@cret dbname=d", "host=h password=*** dbname=d"),
    "libpq key/value, quoted": ("host=h password = 'se cret' dbname=d", "host=h password = *** dbname=d"),
    "OAuth client secret": ("postgresql://h/db?oauth_client_id=hpo&oauth_client_secret=c5",
                            "postgresql://h/db?oauth_client_id=hpo&oauth_client_secret=***"),
    "a token": ("http://mlflow:5000/api?access_token=abc.def&run=1", "http://mlflow:5000/api?access_token=***&run=1"),
    "presigned artifact URLs": (
        "https://s3/b/k?X-Amz-Security-Token=t0k&X-Amz-Signature=5ig https://blob/c?sv=1&sig=x%2B",
        "https://s3/b/k?X-Amz-Security-Token=***&X-Amz-Signature=*** https://blob/c?sv=1&sig=***"),
    "in JSON": ('{"storage": "postgresql://u@h/db?password=SECRET"}',
                '{"storage": "postgresql://u@h/db?password=***"}'),
}


@pytest.mark.parametrize("text, redacted", PARAMETERS.values(), ids=PARAMETERS)
def test_secret_parameters_are_redacted(text: str, redacted: str) -> None:
    assert redact(text) == redacted


def test_the_secrets_of_a_registered_url_are_redacted_wherever_they_appear() -> None:
    register_secrets("postgresql+psycopg2://u:Nq7@Vx3k@127.0.0.1:5432/db")
    # libpq splits at the first @: its host is the rest of the password and the real host.
    assert (redact('could not translate host name "Vx3k@127.0.0.1" to address')
            == 'could not translate host name "***@127.0.0.1" to address')
    assert redact("password Nq7@Vx3k quoted") == "password *** quoted"


def test_url_decoded_forms_and_query_parameters_are_registered() -> None:
    register_secrets("postgresql://u:Wq2:8v%40Jx5k@h/db", "postgresql://u@h/db?sslmode=disable&password=Hd3q+Pn6y%21")
    assert redact("Wq2:8v@Jx5k, 8v%40Jx5k, Jx5k") == "***, ***, ***"
    assert redact("Hd3q Pn6y! Hd3q+Pn6y!") == "*** ***"  # query values decode + to a space, user info does not


def test_validating_a_study_registers_its_urls_in_every_process_that_reads_it() -> None:
    StudyConfig.model_validate(study_dict(storage="postgresql://u:Kf4@Zr8m@h/db",
                                          tracking_uri="postgresql://u@h/mlflow?password=Yt6pLw2c"))
    assert redact("Zr8m@h Yt6pLw2c") == "***@h ***"
    # A worker process gets its config as JSON on stdin; reading its job registers the secrets there.
    job = {"config": study_dict(storage="postgresql://u:Gb5@Ds9q@h/db"), "learner": "protonet", "parent_run": "r",
           "worker": "w", "timeout": None, "threads": 1}
    WorkerJob.model_validate_json(json.dumps(job))
    assert redact("Ds9q@h") == "***@h"


ORDINARY = ["sqlite:///optuna.db", "sqlite:////work/runs/optuna.db?timeout=30", "journal:///x.journal",
            "/home/user/runs/optuna.db", "127.0.0.1:5432", "db.example.com:5432", "http://127.0.0.1:5000",
            "postgresql://u@host:5432/db?sslmode=require", "user@example.com", "password_file=/etc/pg.pass",
            "error: study.yaml: storage: cannot connect to postgresql+psycopg2://root:***@127.0.0.1:1/x: refused",
            "lr=0.001 meta_batch=4 test_accuracy=0.51", "https://github.com/org/repo@v1.2"]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_passes_unchanged(text: str) -> None:
    # Pieces shorter than 4 characters are never registered: they would redact ordinary words.
    register_secrets("postgresql://u:db@x@h/x", "http://u:a:b@h")
    assert redact(text) == text
