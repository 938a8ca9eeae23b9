"""What each target makes of a final answer to each write: status × operation → outcome.

The answers are built as the servers send them (bodies from the reference: Jira's
``errorMessages`` / ``errors``, Confluence's ``message``); the tables are the targets' own
``_outcome`` functions, the one place each reads its statuses.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from oktasync.http import Answer
from oktasync.models import Operation, OpKind, WriteStatus
from oktasync.targets import confluence, jira

APPLIED, ALREADY, REFUSED, FAILED = (WriteStatus.APPLIED, WriteStatus.ALREADY,
                                     WriteStatus.REFUSED, WriteStatus.FAILED)


def answer(status: int, body: Any = None, *, unclear: bool = False) -> Answer:
    raw = b"" if body is None else orjson.dumps(body)
    return Answer(status, CIMultiDictProxy(CIMultiDict()), raw, URL("http://127.0.0.1/x"),
                  after_unclear_attempt=unclear)


def op(kind: OpKind) -> Operation:
    return Operation(kind, "t", username="ann", group="staff", email="ann@example.com",
                     display_name="Ann", new_username="anne")


def jira_errors(*messages: str, **fields: str) -> dict[str, Any]:
    return {"errorMessages": list(messages), "errors": fields}


JIRA_TABLE = [
    # every operation: 2xx applied
    *[(kind, 201 if kind in (OpKind.CREATE_USER, OpKind.CREATE_GROUP) else 200, None, APPLIED)
      for kind in OpKind],
    (OpKind.REMOVE_MEMBER, 204, None, APPLIED),
    # "already" is only "already" for the operations that create something
    (OpKind.CREATE_USER, 400, jira_errors(username="A user with that username already exists."),
     ALREADY),
    (OpKind.CREATE_GROUP, 400, jira_errors("A group with that name already exists."), ALREADY),
    (OpKind.ADD_MEMBER, 400, jira_errors("Cannot add user. 'ann' is already a member of "
                                         "'staff'"), ALREADY),
    (OpKind.UPDATE_USER, 400, jira_errors(email="already in use"), FAILED),
    (OpKind.REMOVE_MEMBER, 400, jira_errors("User 'ann' is not a member of group 'staff'"),
     ALREADY),
    (OpKind.REMOVE_MEMBER, 404, jira_errors("User 'ann' is not a member of group 'staff'"),
     ALREADY),
    (OpKind.REMOVE_MEMBER, 404, jira_errors("The group 'staff' does not exist."), FAILED),
    # refusals: the licence, permissions, a project lead — never retried
    (OpKind.CREATE_USER, 400, jira_errors("You have reached your licence limit."), REFUSED),
    (OpKind.DEACTIVATE_USER, 400, jira_errors("Cannot deactivate user: user is a project lead"),
     REFUSED),
    (OpKind.CREATE_USER, 403, jira_errors("You do not have the permission."), REFUSED),
    (OpKind.ADD_MEMBER, 402, None, REFUSED),
    # anything else failed
    (OpKind.UPDATE_USER, 404, jira_errors("The user named 'ann' does not exist"), FAILED),
    (OpKind.CREATE_USER, 400, jira_errors(password="too short"), FAILED),
    (OpKind.ACTIVATE_USER, 409, None, FAILED),
]


@pytest.mark.parametrize(("kind", "status", "body", "expected"), JIRA_TABLE)
def test_jira_answer_table(kind: OpKind, status: int, body: Any,
                           expected: WriteStatus) -> None:
    result = jira._outcome(op(kind), answer(status, body))
    assert result.status is expected, result
    if expected is not APPLIED:
        assert result.detail, "a reason is always said"


def test_jira_licence_refusal_stops_creating_and_lost_answers_may_be_ours() -> None:
    full = jira._outcome(op(OpKind.CREATE_USER),
                         answer(400, jira_errors("You have reached your licence limit.")))
    assert full.status is REFUSED and full.stop_creating
    exists = answer(400, jira_errors(username="A user with that username already exists."))
    assert not jira._outcome(op(OpKind.CREATE_USER), exists).maybe_ours
    exists.after_unclear_attempt = True
    assert jira._outcome(op(OpKind.CREATE_USER), exists).maybe_ours


def confluence_message(text: str) -> dict[str, Any]:
    return {"statusCode": 0, "message": text}


CONFLUENCE_TABLE = [
    *[(kind, 200, None, APPLIED) for kind in OpKind],
    (OpKind.ADD_MEMBER, 204, None, APPLIED),
    (OpKind.CREATE_USER, 409, confluence_message("User already exists"), ALREADY),
    (OpKind.CREATE_GROUP, 409, confluence_message("Group already exists"), ALREADY),
    # a 409 is "already" only for creates
    (OpKind.ADD_MEMBER, 409, confluence_message("conflict"), FAILED),
    (OpKind.CREATE_USER, 402, confluence_message("licence"), REFUSED),
    (OpKind.DEACTIVATE_USER, 403, confluence_message("not permitted"), REFUSED),
    (OpKind.ACTIVATE_USER, 404, confluence_message("no such user"), FAILED),
    (OpKind.REMOVE_MEMBER, 400, confluence_message("bad request"), FAILED),
]


@pytest.mark.parametrize(("kind", "status", "body", "expected"), CONFLUENCE_TABLE)
def test_confluence_answer_table(kind: OpKind, status: int, body: Any,
                                 expected: WriteStatus) -> None:
    result = confluence._outcome(op(kind), answer(status, body))
    assert result.status is expected, result
    if expected is not APPLIED:
        assert result.detail


def test_confluence_no_seat_left_stops_creating() -> None:
    result = confluence._outcome(op(OpKind.CREATE_USER), answer(402, confluence_message("x")))
    assert result.status is REFUSED and result.stop_creating
    assert "licence" in result.detail
