"""Properties of the planner and the username rule, over generated directories (hypothesis).

The planner: for any Okta directory (users of every status, in-scope and out-of-scope groups,
memberships) and any target state (accounts active or not, their groups, owned by this app, by
another, or by nobody; accounts no Okta user maps to; the settings that change the outcome),
the operations the planner returns, applied to the target state by the small applier below
(written from the semantics page: what each write does to a Data Center directory), give the
state the tests' oracle (``oracle.py``) says a full sync reaches; and planning again against
that result gives no operation at all (a second sync writes nothing).

The username rule: for any login (any Unicode text: controls, right-to-left marks, surrogates
are not logins Okta stores, but nothing stops them reaching the engine from other sources), the
rule never raises, is deterministic, agrees with the oracle's reading of the semantics page,
and its result is either a username the target takes or a per-user problem the planner reports
without writing anything.

Deterministic for CI: ``derandomize=True``, no example database, no deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oktasync.models import Claim, FindingKind, OktaUser, Operation, OpKind, TargetAccount, name_key
from oktasync.planner import Current, Desired, TargetRules, plan_groups, plan_unmapped, plan_user
from oktasync.targets import confluence as confluence_target
from oktasync.targets import jira as jira_target
from oktasync.usernames import UsernameRule
from tests.engine import oracle

CI = settings(derandomize=True, database=None, deadline=None, max_examples=150,
              suppress_health_check=[HealthCheck.too_slow])
APP, OTHER_APP = "corp-okta", "other-okta"
STATUSES = ("ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY",
            "STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED")
IN_SCOPE = ("Engineering", "Sales & Marketing", "R&D/Platform", "Équipe Ü")
OUTSIDE = "Legacy Contractors"  # a target group no in-scope Okta group maps to
EVERYONE = "Everyone"  # Okta's BUILT_IN group: out of scope
DEFAULTS = {"jira": "jira-software-users", "confluence": "confluence-users"}
FORBIDDEN_GROUP = {"jira": jira_target.forbidden_group,
                   "confluence": confluence_target.forbidden_group}
FORBIDDEN_USERNAME = {"jira": jira_target.forbidden_username,
                      "confluence": confluence_target.forbidden_username}
NAMES = ("ann", "bob", "chloe", "dev", "eve", "finn", "gus", "hana", "ivo", "admin")
EMAILS = ("{n}@corp.example", "{N}@Corp.Example", "{n}.old@corp.example")
DISPLAY = ("{N} Smith", "{N} Jones", "{N}\x07 Bell", "Ø{N}")


# -- the worlds -------------------------------------------------------------------------------

@dataclass
class Account:
    """A target account as the applier keeps it."""

    username: str  # as stored (its case is the target's)
    email: str
    display: str
    active: bool
    groups: set[str]  # group keys
    claim: Claim | None = None


@dataclass
class World:
    target: str
    okta_users: list[dict[str, Any]]  # the emulators' JSON shape, as the oracle reads it
    memberships: dict[str, list[str]]  # Okta group name -> user ids
    accounts: dict[str, Account]  # key -> account
    groups: set[str]  # keys of the target's groups
    adopt: str
    deactivate_missing: bool
    deleted: set[str] = field(default_factory=set)  # usernames synced for deleted Okta users
    # Okta user id -> the username it was synced as before its login changed
    synced_as: dict[str, str] = field(default_factory=dict)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    target = draw(st.sampled_from(("jira", "confluence")))
    people = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    okta_users = []
    for i, name in enumerate(people):
        display = draw(st.sampled_from((None, *DISPLAY)))
        okta_users.append({"id": f"00u{i:02d}", "status": draw(st.sampled_from(STATUSES)),
                           "profile": {
                               "login": draw(st.sampled_from((name, name.title())))
                                        + "@corp.example",
                               "email": draw(st.sampled_from(EMAILS)).format(
                                   n=name, N=name.title()),
                               "firstName": name.title(), "lastName": "Smith",
                               "displayName": display and display.format(N=name.title())}})
    memberships = {g: [u["id"] for u in okta_users if draw(st.booleans())]
                   for g in (*IN_SCOPE, EVERYONE)}
    all_groups = (*IN_SCOPE, OUTSIDE, DEFAULTS[target])
    accounts: dict[str, Account] = {}
    deleted: set[str] = set()
    by_name = {oracle.username_of(u["profile"]["login"], "(.*)@.*", "$1"): u for u in okta_users}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        user = by_name.get(name)
        owner = draw(st.sampled_from(("ours", "nobody", "other")))
        claim = None
        if owner == "other":
            claim = Claim(OTHER_APP, None)
        elif owner == "ours":
            # synced for the Okta user it maps to, or (unmapped) for one deleted since
            gone = user is None and draw(st.booleans())
            claim = Claim(APP, user["id"] if user else ("00uGONE" if gone else None))
            if gone:
                deleted.add(name)
        if name == "admin":
            claim = None  # a protected account nobody syncs
        accounts[name] = Account(
            username=draw(st.sampled_from((name, name.title(), name.upper()))),
            email=draw(st.sampled_from(EMAILS)).format(n=name, N=name.title()),
            display=draw(st.sampled_from(DISPLAY)).format(N=name.title()),
            active=draw(st.booleans()),
            groups={name_key(g) for g in all_groups if draw(st.booleans())},
            claim=claim)
    # logins changed since the last run: the account this app synced under the old one (only
    # where the new username is free: a taken one is a conflict the oracle does not model)
    synced_as: dict[str, str] = {}
    for name, user in sorted(by_name.items()):
        if name not in accounts and name != "admin" and draw(st.booleans()):
            old = f"{name}.old"
            synced_as[user["id"]] = old
            accounts[old] = Account(
                username=draw(st.sampled_from((old, old.title()))),
                email=draw(st.sampled_from(EMAILS)).format(n=name, N=name.title()),
                display=draw(st.sampled_from(DISPLAY)).format(N=name.title()),
                active=draw(st.booleans()),
                groups={name_key(g) for g in all_groups if draw(st.booleans())},
                claim=Claim(APP, user["id"]))
    groups = {name_key(g) for g in all_groups if draw(st.booleans())}
    groups |= {g for a in accounts.values() for g in a.groups}  # members are of real groups
    return World(target, okta_users, memberships, accounts, groups,
                 adopt=draw(st.sampled_from(("email-match", "always", "never"))),
                 deactivate_missing=draw(st.booleans()), deleted=deleted, synced_as=synced_as)


# -- the engine's planner, called as the pipeline calls it ----------------------------------

def rules_of(world: World) -> TargetRules:
    return TargetRules(
        app=APP, target=world.target, deactivate_missing=world.deactivate_missing,
        adopt_existing=world.adopt, protected=frozenset({"admin"}),
        default_groups=(DEFAULTS[world.target],),
        scope=frozenset(name_key(g) for g in IN_SCOPE
                        if FORBIDDEN_GROUP[world.target](g) is None),
        group_names={name_key(g): g for g in IN_SCOPE},
        can_rename=world.target == "jira", can_update_profile=world.target == "jira",
        forbidden_username=FORBIDDEN_USERNAME[world.target],
        forbidden_group=FORBIDDEN_GROUP[world.target])


def okta_user(user: dict[str, Any]) -> OktaUser:
    p = user["profile"]
    return OktaUser(user["id"], user["status"], p["login"], p["email"], p["firstName"],
                    p["lastName"], p["displayName"])


@dataclass
class Plan:
    grants: list[Operation]
    removals: list[Operation]
    claims: dict[str, str]  # username key -> the Okta user this app now syncs it for

    def operations(self) -> list[Operation]:
        """Grants first, removals after: the pipeline's order (removals wait for the gate)."""
        return self.grants + self.removals


def plan(world: World) -> Plan:
    """What the planner gives for this world: groups, each Okta user, each account no Okta
    user maps to."""
    rules = rules_of(world)
    rule = UsernameRule("(.*)@.*", "$1")
    grants: list[Operation] = list(plan_groups(
        [*IN_SCOPE, DEFAULTS[world.target]], sorted(world.groups), rules).grants)
    removals: list[Operation] = []
    mapped = set()
    claims: dict[str, str] = {}
    okta_ids = {u["id"] for u in world.okta_users}
    for user in world.okta_users:
        username = rule.username(user["profile"]["login"], user["profile"]["email"])
        mapped.add(username)
        groups = tuple(g for g in IN_SCOPE if user["id"] in world.memberships[g])
        account = world.accounts.get(username)
        at_name = None if account is None else current(account)
        before = world.accounts.get(world.synced_as.get(user["id"], ""))
        previous = None if before is None else current(before)
        if previous is not None:
            mapped.add(previous.account.key)
        p = plan_user(Desired(okta_user(user), username, groups), at_name, rules, previous)
        grants += p.grants
        removals += p.removals
        if p.claim is not None:
            claims[p.claim] = user["id"]
    for key, account in sorted(world.accounts.items()):
        if key in mapped:
            continue
        claim = account.claim
        gone = claim is not None and claim.okta_id is not None and claim.okta_id not in okta_ids
        removals += plan_unmapped(current(account), rules, okta_user_deleted=gone).removals
    return Plan(grants, removals, claims)


def current(account: Account) -> Current:
    return Current(TargetAccount(account.username, account.email, account.display,
                                 account.active), frozenset(account.groups), account.claim)


# -- the applier: what each write does to a Data Center directory (the semantics page) -------

def apply(world: World, planned: Plan) -> None:
    """Each write, in order; then this app owns what it claimed (its writes succeeded)."""
    for op in planned.operations():
        key = name_key(op.username)
        if op.kind is OpKind.CREATE_GROUP:
            assert op.group is not None and name_key(op.group) not in world.groups, op
            world.groups.add(name_key(op.group))
        elif op.kind is OpKind.CREATE_USER:
            assert key not in world.accounts, f"{op}: exists"
            assert op.email is not None and op.display_name is not None
            world.accounts[key] = Account(op.username, op.email, op.display_name, True, set(),
                                          Claim(APP, op.okta_id))
        else:
            assert key in world.accounts, f"{op}: no such account"
            account = world.accounts[key]
            if op.kind is OpKind.UPDATE_USER:
                account.email = op.email if op.email is not None else account.email
                account.display = (op.display_name if op.display_name is not None
                                   else account.display)
            elif op.kind in (OpKind.ACTIVATE_USER, OpKind.DEACTIVATE_USER):
                account.active = op.kind is OpKind.ACTIVATE_USER
            elif op.kind is OpKind.ADD_MEMBER:
                assert op.group is not None and name_key(op.group) in world.groups, op
                account.groups.add(name_key(op.group))
            elif op.kind is OpKind.REMOVE_MEMBER:
                assert op.group is not None
                account.groups.discard(name_key(op.group))
            elif op.kind is OpKind.RENAME_USER:
                assert op.new_username is not None
                assert name_key(op.new_username) not in world.accounts, f"{op}: taken"
                account.username = op.new_username
                world.accounts[name_key(op.new_username)] = world.accounts.pop(key)
            else:
                raise AssertionError(f"unexpected {op}")
    for key, okta_id in planned.claims.items():
        world.accounts[key].claim = Claim(APP, okta_id)


# -- judging ----------------------------------------------------------------------------------

def as_oracle(accounts: dict[str, Account]) -> dict[str, oracle.Account]:
    return {k: oracle.Account(a.email, a.display, a.active, set(a.groups))
            for k, a in accounts.items()}


def okta_json(world: World) -> dict[str, Any]:
    groups = [{"id": name, "type": "BUILT_IN" if name == EVERYONE else "OKTA_GROUP",
               "profile": {"name": name}} for name in world.memberships]
    return {"users": world.okta_users, "groups": groups, "memberships": world.memberships}


def snapshot(world: World) -> dict[str, Account]:
    return {k: Account(a.username, a.email, a.display, a.active, set(a.groups), a.claim)
            for k, a in world.accounts.items()}


@CI
@given(worlds())
def test_the_plan_applied_reaches_the_oracle_state_and_a_second_plan_is_empty(
    world: World,
) -> None:
    before = snapshot(world)
    owned = {k for k, a in before.items() if a.claim is not None and a.claim.app == APP}
    foreign = {k for k, a in before.items() if a.claim is not None and a.claim.app != APP}
    settings_ = oracle.Settings(default_groups={world.target: (DEFAULTS[world.target],)},
                                adopt=world.adopt, deactivate_missing=world.deactivate_missing)
    expected = oracle.expected_accounts(okta_json(world), as_oracle(before), world.target,
                                        settings_, world.synced_as, owned=owned,
                                        foreign=foreign, deleted=world.deleted)

    planned = plan(world)
    assert not any(op.kind.removes_access for op in planned.grants), "removals wait"
    assert all(op.kind.removes_access for op in planned.removals)
    apply(world, planned)
    assert oracle.differences(expected, as_oracle(world.accounts)) == []

    again = plan(world).operations()
    assert again == [], again


# -- the username rule ------------------------------------------------------------------------

RULES = (("(.*)@.*", "$1"), (None, "$1"), ("([^+@]*)(?:\\+[^@]*)?@.*", "$1"),
         ("^([^.@]+)\\.([^@]+)@.*$", "$2.$1"))
# Java's "." and "$" also stop at \r, U+0085, U+2028 and U+2029, Python's only at \n: the
# oracle (Python's re) reads the rule as Java does only without those
JAVA_LINE_ENDS = "\r\x85\u2028\u2029"
logins = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=20), st.text(max_size=12)),
    st.builds(lambda a, mark, b: f"{a}{mark}{b}@corp.example", st.text("abcXYZ.+", max_size=8),
              st.sampled_from(("\u200f", "\u202e", "\u200b", "\x00", "\x1b", "\u2066", "Ω",
                               "\u0301", "İ", "ß", "\U0001f600")), st.text("abc", max_size=4)),
)


@CI
@given(st.sampled_from(RULES), logins, st.sampled_from(("jira", "confluence")))
def test_the_username_rule_never_raises_and_gives_a_username_or_a_reported_problem(
    rule_text: tuple[str | None, str], login: str, target: str,
) -> None:
    regex, replacement = rule_text
    rule = UsernameRule(regex, replacement)
    username = rule.username(login, "someone@corp.example")
    assert isinstance(username, str)
    assert username == UsernameRule(regex, replacement).username(login, None), "deterministic"
    if not any(c in login for c in JAVA_LINE_ENDS + "\n"):
        assert username == oracle.username_of(login, regex, replacement)

    # either a username the target takes, or the user is skipped and reported, nothing written
    refused = FORBIDDEN_USERNAME[target](username) if username else "empty"
    assert (refused is not None) == (not username or oracle.FORBIDS[target](username)), \
        (username, refused)
    user = OktaUser("00u1", "ACTIVE", login, "someone@corp.example", "Some", "One", None)
    rules = TargetRules(app=APP, target=target, forbidden_username=FORBIDDEN_USERNAME[target],
                        default_groups=(DEFAULTS[target],))
    planned = plan_user(Desired(user, username, ()), None, rules)
    if refused is not None:
        assert planned.grants == [] and planned.removals == [] and planned.claim is None
        [finding] = planned.findings
        assert finding.kind is FindingKind.SKIPPED and finding.okta_id == "00u1"
        assert finding.login == login
    else:
        assert [op.kind for op in planned.grants][:1] == [OpKind.CREATE_USER]
        assert planned.grants[0].username == username
