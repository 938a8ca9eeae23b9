"""Every documented setting does what config/example.toml says it does: a test per setting.

``COVERAGE`` maps each setting to the tests that show its effect (or, for a setting that does
nothing yet, its warning), most of them end to end against the emulators, the rest where the
setting's whole effect is its check. Two tests keep it honest: the table covers exactly the
settings of the schema (``oktasync.settings``), and example.toml documents exactly those (a
``key = ...`` line in its section, commented out or not). A new setting without a test, or
without its documentation, fails here.

The end-to-end tests below cover what no other test showed through a configuration file: each
writes a config (``harness.write_config``), runs a real sync against the emulators and judges
the servers' state (``/_emulator/state``) or, for the pace settings, what a counting proxy in
front of the server saw.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oktasync.config import load_config
from oktasync.engine import SyncOptions, run_sync
from oktasync.settings import SECTIONS
from tests.engine import oracle
from tests.engine.harness import load, states, stats, write_config, write_requests
from tests.engine.test_sync_behaviour import (
    APP,
    account_json,
    active_on,
    assert_oracle,
    counts,
    estate,
    groups_of,
    ordinary,
    ordinary_groups,
    problems,
    quiet,
    synced,
    username,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example.toml"

B = "tests.engine.test_sync_behaviour::"
C = "tests.engine.test_config::"
S = "tests.engine.test_settings::"
H = "tests.engine.test_hooks::"
D = "tests.engine.test_okta_delivers::"
N = "tests.engine.test_networks::"
NC = "tests.engine.test_network_config::"
OA = "tests.engine.test_okta_oauth_sync::"
COVERAGE: dict[str, tuple[str, ...]] = {
    "app.name": (S + "test_the_state_directory_and_the_app_name_place_every_file",
                 B + "test_two_apps_on_one_target_never_take_access_the_other_app_gave",
                 C + "test_duplicate_app_names"),
    "app.okta_url": ("tests.engine.test_sync_e2e::"
                     "test_full_sync_reaches_the_oracle_state_and_a_second_run_writes_nothing",
                     C + "test_okta_url_refused"),
    "app.okta_auth": (OA + "test_a_service_app_syncs_to_the_oracle_state",
                      NC + "test_service_app_settings_go_together_and_exclude_the_token"),
    "app.okta_client_id": (
        OA + "test_a_refused_service_app_stops_before_anything_with_exit_2_saying_which",),
    "app.okta_private_key": (
        OA + "test_a_service_app_syncs_to_the_oracle_state",
        NC + "test_a_key_that_cannot_sign_is_named_without_its_content"),
    "app.okta_key_id": (OA + "test_a_service_app_syncs_to_the_oracle_state",),
    "app.okta_proxy": (
        N + "test_every_request_goes_through_the_configured_proxies_with_credentials",
                       NC + "test_proxy_mistakes_name_the_setting"),
    "app.okta_proxy_username": (
        N + "test_every_request_goes_through_the_configured_proxies_with_credentials",),
    "app.okta_proxy_password": (
        N + "test_every_request_goes_through_the_configured_proxies_with_credentials",
        "tests.engine.test_logs::test_every_secret_kind_is_redacted_from_lines_and_exceptions"),
    "app.okta_ca_bundle": (
        N + "test_a_certificate_problem_stops_the_run_with_exit_2_naming_server_and_fix",
        N + "test_targets_on_a_private_ca_with_client_certificates_reach_the_oracle_state"),
    "app.okta_token": ("tests.engine.test_sync_cli::test_secrets_appear_in_no_summary_file_or_log",
                       C + "test_missing_env_var_names_the_var_not_a_value"),
    "app.username_regex": (B + "test_an_empty_username_is_skipped_and_reported",
                           C + "test_java_only_regex_syntax_is_refused"),
    "app.username_replacement": (S + "test_username_replacement_builds_the_target_username",
                                 C + "test_replacement_group_references_are_checked"),
    "app.import_users": (S + "test_import_users_false_creates_no_account",),
    "app.update_users": (S + "test_each_switch_holds_back_only_its_own_kind_of_write",),
    "app.sync_user_status": (S + "test_each_switch_holds_back_only_its_own_kind_of_write",),
    "app.deactivate_missing": (B + "test_two_apps_on_one_target_never_take_access_the_other_"
                                   "app_gave",
                               "tests.engine.test_short_listings::"
                               "test_an_okta_user_listing_that_shrank_stops_every_removal"),
    "app.remove_memberships": (S + "test_each_switch_holds_back_only_its_own_kind_of_write",),
    "app.group_types": (S + "test_group_types_include_and_exclude_decide_the_groups_in_scope",),
    "app.group_include": (S + "test_group_types_include_and_exclude_decide_the_groups_in_scope",
                          B + "test_two_apps_on_one_target_never_take_access_the_other_app_gave"),
    "app.group_exclude": (S + "test_group_types_include_and_exclude_decide_the_groups_in_scope",),
    "app.group_rename": (S + "test_group_rename_gives_the_target_group_its_new_name",
                         C + "test_rename_collisions"),
    "app.user_filter": (
        "tests.engine.test_user_scope::test_user_filter_is_evaluated_by_okta",
        "tests.engine.test_user_scope::test_an_empty_filter_is_a_configuration_error",
    ),
    "app.required_groups": (
        "tests.engine.test_user_scope::test_users_leaving_the_scope_count_against_max_deactivations",
        "tests.engine.test_user_scope::test_scope_mistakes_stop_the_run_before_writing",
    ),
    "app.okta_app_id": ("tests.engine.test_user_scope::test_okta_app_assignments_per_target",),
    "target.user_filter": (
        "tests.engine.test_user_scope::test_a_target_filter_overrides_the_apps",),
    "target.required_groups": ("tests.engine.test_user_scope::test_required_groups_on_jira_only",),
    "target.okta_app_id": ("tests.engine.test_user_scope::test_okta_app_assignments_per_target",),
    "app.attribute_groups": (
        "tests.engine.test_attribute_groups::"
        "test_department_groups_follow_the_attribute_from_run_to_run",
        "tests.engine.test_attribute_groups::test_an_allow_list_and_a_map_choose_the_groups",
        "tests.engine.test_attribute_groups::"
        "test_an_attribute_group_on_an_okta_groups_name_is_a_usage_error",
        "tests.engine.test_attribute_groups::test_a_mistake_in_attribute_groups_is_named_and_"
        "exits_2"),
    "app.max_deactivations": (B + "test_max_deactivations_stops_every_deactivation_until_forced",),
    "app.max_membership_removals": ("tests.engine.test_short_listings::"
                                    "test_membership_removals_have_a_guard_of_their_own",),
    "app.max_listing_shrink": ("tests.engine.test_short_listings::"
                               "test_an_okta_user_listing_that_shrank_stops_every_removal",),
    "app.full_sync_threshold": ("tests.engine.test_incremental::"
                                "test_more_changes_than_the_threshold_run_a_full_sync_and_say_why",),
    "app.schedule": (S + "test_schedule_is_how_often_serve_syncs_and_warns_no_more",
                     "tests.engine.test_serve::test_healthz_turns_unhealthy_after_three_"
                     "intervals_without_success",
                     C + "test_schedule_minimum_and_type",
                     "tests.engine.test_schedules::test_a_cron_expression_fires_at_its_"
                     "minutes_never_at_once"),
    "app.timezone": ("tests.engine.test_schedules::test_cron_follows_the_zones_daylight_saving",
                     "tests.engine.test_schedules::test_cron_and_zone_settings_are_checked"),
    "app.reconcile_schedule": ("tests.engine.test_service_runs::test_scheduled_reconcile_and_"
                               "event_runs_of_an_app_never_overlap",
                               C + "test_service_change_settings_are_checked"),
    "app.changes": (H + "test_a_sign_in_delivered_by_hook_is_synced_within_two_seconds_once",
                    H + "test_the_poller_catches_up_with_what_changed_while_the_service_was_down",
                    C + "test_service_change_settings_are_checked"),
    "app.poll_interval": (H + "test_the_poller_catches_up_with_what_changed_while_the_service_"
                          "was_down", C + "test_service_change_settings_are_checked"),
    "app.okta_hook_secret": (H + "test_forged_and_malformed_deliveries_are_refused_and_sync_"
                             "nothing", C + "test_service_change_settings_are_checked",
                             D + "test_a_hook_with_the_wrong_secret_is_refused_never_retried_"
                             "and_syncs_nothing"),
    "app.login_hook_secret": (H + "test_the_login_hook_syncs_the_user_and_answers_when_done",
                              H + "test_forged_and_malformed_deliveries_are_refused_and_sync_"
                              "nothing"),
    "app.deactivation_window": (H + "test_deactivations_from_events_past_the_window_are_held_"
                                "until_released", C + "test_service_change_settings_are_checked"),
    "serve.tls_cert": (C + "test_serve_tls_and_inbox_settings_are_checked", D + "test_okta_"
                       "delivers_to_the_registered_service_and_every_change_lands"),
    "serve.tls_key": (C + "test_serve_tls_and_inbox_settings_are_checked", D + "test_okta_"
                      "delivers_to_the_registered_service_and_every_change_lands"),
    "serve.inbox_capacity": (H + "test_a_flood_of_forged_deliveries_is_bounded_and_syncs_nothing",
                             C + "test_serve_tls_and_inbox_settings_are_checked"),
    "serve.listen": ("tests.engine.test_serve::test_serve_syncs_at_start_reports_health_and_"
                     "metrics_and_stops_on_sigterm",),
    "app.okta_max_share": ("tests.engine.test_rate_limits::"
                           "test_okta_share_is_never_exceeded_and_no_429",),
    "app.okta_concurrency": (S + "test_okta_concurrency_caps_requests_to_okta",),
    "app.targets": (S + "test_an_app_writes_only_to_its_targets",
                    C + "test_app_targets_must_exist_and_be_unique"),
    "app.adopt_existing": (B + "test_existing_accounts_are_adopted_as_adopt_existing_says",),
    "target.kind": ("tests.engine.test_sync_e2e::"
                    "test_full_sync_reaches_the_oracle_state_and_a_second_run_writes_nothing",),
    "target.url": ("tests.engine.test_unreachable::"
                   "test_connection_refused_names_target_url_and_cause",
                   C + "test_target_url_may_have_a_context_path_but_not_plain_http"),
    "target.token": (B + "test_jira_rejecting_the_credentials_is_exit_2_naming_the_target",),
    "target.username": ("tests.engine.test_sync_cli::test_secrets_appear_in_no_summary_file_or_log",
                        C + "test_username_and_password_credentials"),
    "target.password": ("tests.engine.test_sync_cli::test_secrets_appear_in_no_summary_file_or_log",
                        C + "test_username_and_password_credentials"),
    "target.default_groups": ("tests.engine.test_sync_e2e::"
                              "test_full_sync_reaches_the_oracle_state_and_a_second_run_writes_"
                              "nothing",),
    "target.protected_users": (B + "test_an_okta_user_mapping_to_a_protected_user_is_skipped",),
    "target.concurrency": (S + "test_concurrency_and_max_in_flight_cap_requests_in_flight",),
    "target.max_rps": (S + "test_max_rps_caps_the_request_rate",),
    "target.adopt_existing": (S + "test_a_targets_adopt_existing_overrides_the_apps",),
    "target.username_from": ("tests.engine.test_username_rules::"
                             "test_targets_name_accounts_by_their_own_rules",),
    "target.username_regex": ("tests.engine.test_username_rules::"
                              "test_targets_name_accounts_by_their_own_rules",
                              C + "test_a_targets_own_rule_is_checked_like_the_apps"),
    "target.username_replacement": ("tests.engine.test_username_rules::"
                                    "test_targets_name_accounts_by_their_own_rules",
                                    C + "test_a_targets_own_rule_is_checked_like_the_apps"),
    "target.proxy": (
        N + "test_every_request_goes_through_the_configured_proxies_with_credentials",
                     NC + "test_proxy_mistakes_name_the_setting"),
    "target.proxy_username": (N + "test_wrong_proxy_credentials_stop_the_run_with_exit_2",),
    "target.proxy_password": (N + "test_wrong_proxy_credentials_stop_the_run_with_exit_2",
                              "tests.engine.test_logs::"
                              "test_every_secret_kind_is_redacted_from_lines_and_exceptions"),
    "target.ca_bundle": (
        N + "test_targets_on_a_private_ca_with_client_certificates_reach_the_oracle_state",
        N + "test_a_certificate_problem_stops_the_run_with_exit_2_naming_server_and_fix",
        NC + "test_ca_bundles_and_client_certificates_are_checked_when_the_file_loads"),
    "target.client_cert": (
        N + "test_targets_on_a_private_ca_with_client_certificates_reach_the_oracle_state",
        N + "test_a_certificate_problem_stops_the_run_with_exit_2_naming_server_and_fix"),
    "target.client_key": (
        N + "test_targets_on_a_private_ca_with_client_certificates_reach_the_oracle_state",
        NC + "test_ca_bundles_and_client_certificates_are_checked_when_the_file_loads"),
    "target.verified_domains": (
        "tests.engine.test_scim_sync::"
        "test_users_off_the_verified_domains_are_reported_and_never_sent",
        "tests.engine.test_scim_config::"
        "test_a_cloud_directory_keys_accounts_by_email_unless_told_otherwise"),
    "target.key_expires": (
        "tests.engine.test_scim_config::"
        "test_every_run_warns_from_30_days_before_the_key_expires",
        "tests.engine.test_serve::"
        "test_serve_syncs_at_start_reports_health_and_metrics_and_stops_on_sigterm"),
    "serve.console": ("tests.console.test_console::"
                      "test_sign_in_save_settings_synchronize_watch_and_download_in_a_browser",
                      "tests.console.test_console::"
                      "test_no_session_no_token_and_wrong_passwords_are_refused"),
    "serve.console_password_hash": (
        "tests.console.test_console::"
        "test_sign_in_save_settings_synchronize_watch_and_download_in_a_browser",),
    "serve.console_password": ("tests.console.test_console::"
                               "test_a_console_password_from_a_file_signs_in",),
    "target.timeout_s": ("tests.engine.test_unreachable::"
                         "test_a_server_that_never_answers_is_given_up_within_the_deadline",),
    "state.dir": (S + "test_the_state_directory_and_the_app_name_place_every_file",
                  C + "test_state_dir_and_pipeline"),
    "state.keep_runs": ("tests.engine.test_audit::"
                        "test_history_lists_the_runs_in_order_and_report_shows_one",),
    "state.audit": ("tests.engine.test_audit::"
                    "test_the_first_run_audit_is_in_the_report_and_audit_false_keeps_none",),
    "pipeline.queue_size": (S + "test_a_queue_of_one_still_reaches_the_desired_state",
                            C + "test_five_mistakes_give_five_problems_each_naming_its_setting"),
    "pipeline.max_in_flight": (S + "test_concurrency_and_max_in_flight_cap_requests_in_flight",),
}


# -- the table is complete ----------------------------------------------------------------------


def schema_settings() -> set[str]:
    return {f"{section}.{key}" for section, model in SECTIONS.items() if section
            for key in model.model_fields}


def documented_settings() -> dict[str, str]:
    """``section.key`` of every ``key = ...`` line of example.toml, commented out or not, with
    the comment lines right above it (joined by spaces)."""
    found: dict[str, str] = {}
    section, comments = "", []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        header = re.fullmatch(r"\[\[?(app|target|state|pipeline|serve)[.\w-]*\]\]?", line.strip())
        key = re.match(r"#? ?([a-z_]+) = ", line)
        if header:
            section, comments = header.group(1), []
        elif section and key:
            found.setdefault(f"{section}.{key.group(1)}", " ".join(comments))
            comments = []
        elif line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        else:
            comments = []
    return found


def test_every_setting_has_a_test_and_every_test_exists() -> None:
    assert set(COVERAGE) == schema_settings(), (
        "a setting without a test (add it to COVERAGE) or a test of no setting: "
        f"{sorted(set(COVERAGE) ^ schema_settings())}")
    for setting, tests in COVERAGE.items():
        assert tests, setting
        for test in tests:
            module, name = test.split("::")
            function = getattr(importlib.import_module(module), name, None)
            assert callable(function) and name.startswith("test_"), f"{setting}: no {test}"


def test_example_toml_documents_exactly_the_settings() -> None:
    assert set(documented_settings()) == schema_settings()
    live = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert {f"app.{k}" for k in live["app"][0]} <= set(documented_settings())


def test_example_toml_says_what_the_schema_says() -> None:
    """One source of truth: each setting's description (the schema's, for editors) is in the
    comment above it in example.toml, which adds only what a file shows best (defaults,
    "Required.", examples)."""
    comments = documented_settings()
    for section, model in SECTIONS.items():
        for key, field in model.model_fields.items():
            if section:
                description = " ".join((field.description or "").split())
                assert description in comments[f"{section}.{key}"], (
                    f"{section}.{key}: example.toml's comment and the description in "
                    "src/oktasync/settings.py differ; say the same in both")


# -- a counting proxy, for the settings that shape the pace ----------------------------------------

HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "host",
              "keep-alive"}


class CountingProxy:
    """An HTTP proxy in front of one emulator: notes how many requests were in flight at once
    and when each arrived; Okta's ``Link`` headers are rewritten to point at the proxy."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.in_flight = 0
        self.peak = 0
        self.arrivals: list[float] = []
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        assert self.session is not None
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.arrivals.append(time.monotonic())
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            async with self.session.request(request.method, self.upstream + request.path_qs,
                                            headers=headers, data=await request.read()) as got:
                body = await got.read()
                out = {k: (v.replace(self.upstream, self.url) if k.lower() == "link" else v)
                       for k, v in got.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=got.status, body=body, headers=out)
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def counting_proxy(upstream: str) -> AsyncIterator[CountingProxy]:
    proxy = CountingProxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    proxy.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        proxy.session = session
        try:
            yield proxy
        finally:
            await runner.cleanup()


def through(config_path: Path, upstream: str, proxy: CountingProxy) -> Path:
    """The config with one server's URL pointing at the proxy."""
    config_path.write_text(config_path.read_text(encoding="utf-8").replace(
        f'"{upstream}"', f'"{proxy.url}"'), encoding="utf-8")
    return config_path


# -- app: name, state: dir -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_state_directory_and_the_app_name_place_every_file(tmp_path: Path) -> None:
    async with estate(users=30, groups=6) as running:
        path = write_config(tmp_path, running)
        text = path.read_text(encoding="utf-8").replace(f'dir = "{tmp_path / "state"}"',
                                                        'dir = "here/state"')
        path.write_text(text.replace('name = "test-app"', 'name = "corp.okta-1"'), "utf-8")
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert result.exit_code == 0
        app_dir = tmp_path / "here" / "state" / "corp.okta-1"  # relative to the config file
        assert (app_dir / "last-run.json").is_file()
        assert list(app_dir.glob("findings-*.csv"))
        assert not (tmp_path / "state").exists()


# -- app: username rule -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_username_replacement_builds_the_target_username(tmp_path: Path) -> None:
    async with estate(users=30, groups=6) as running:
        path = write_config(tmp_path, running, targets=("jira",))
        path.write_text(path.read_text(encoding="utf-8").replace(
            'username_regex = "(.*)@.*"\nusername_replacement = "$1"',
            'username_regex = "(?<user>[^@]*)@(?<domain>[^.]*).*"\n'
            'username_replacement = "${domain}-${user}"'), encoding="utf-8")
        result = await run_sync(load(path), SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        now = await states(running)
        names = {u["name"] for u in now["jira"]["users"]} - {"admin"}
        expected = {oracle.username_of(u["profile"]["login"], r"([^@]*)@([^.]*).*", "$2-$1")
                    for u in ordinary(now["okta"])}
        assert expected and expected <= names


# -- app: the switches --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_import_users_false_creates_no_account(tmp_path: Path) -> None:
    async with estate(users=40, groups=6) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running, extra_app="import_users = false"))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await states(running)
        for target in ("jira", "confluence"):
            assert counts(result, target)["users_created"] == 0
            assert after[target]["users"] == before[target]["users"], target


@pytest.mark.asyncio
@pytest.mark.parametrize("switch", ["update_users", "sync_user_status", "remove_memberships"])
async def test_each_switch_holds_back_only_its_own_kind_of_write(
    tmp_path: Path, switch: str,
) -> None:
    """Three changes in Okta (a new display name, a suspension, a membership removed); with
    one switch off, only the change that switch governs is not written."""
    async with estate(users=60, groups=8) as running:
        first = await run_sync(load(write_config(tmp_path, running)), SyncOptions(), echo=quiet)
        assert first.exit_code == 0, first.summaries[APP]["notes"]
        now = await states(running)
        scope = ordinary_groups(now["okta"])
        people = [u for u in synced(now["okta"], now)
                  if groups_of(now["okta"], u["id"]) & set(scope)]
        renamed, suspended, leaver = people[:3]
        directory = running.okta.directory
        directory.update_profile(renamed["id"], {"displayName": "Renamed Person"})
        directory.set_status(suspended["id"], "SUSPENDED")
        left = sorted(groups_of(now["okta"], leaver["id"]) & set(scope))[0]
        directory.remove_membership(left, leaver["id"])

        config = load(write_config(tmp_path, running, extra_app=f"{switch} = false"))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await states(running)
        for target in ("jira", "confluence"):
            if target == "jira":  # Confluence's API cannot change a profile at all
                shown = account_json(after[target], username(renamed))
                assert shown is not None
                assert (shown["displayName"] == "Renamed Person") == (switch != "update_users")
            assert active_on(after[target], username(suspended)) == (switch == "sync_user_status")
            member = account_json(after[target], username(leaver))
            assert member is not None
            assert (scope[left] in member["groups"]) == (switch == "remove_memberships"), target


# -- app: scope and names of groups -------------------------------------------------------------


def target_groups(state: dict[str, Any]) -> set[str]:
    return {g["name"] for g in state["groups"]}


@pytest.mark.asyncio
async def test_group_types_include_and_exclude_decide_the_groups_in_scope(
    tmp_path: Path,
) -> None:
    async with estate(users=60, groups=16) as running:
        okta = (await states(running))["okta"]
        kinds = {g["profile"]["name"]: g["type"] for g in okta["groups"]}
        okta_groups = sorted(n for n, t in kinds.items() if t == "OKTA_GROUP")
        app_groups = sorted(n for n, t in kinds.items() if t == "APP_GROUP")
        assert len(okta_groups) >= 3 and app_groups, kinds
        excluded, included = okta_groups[0], okta_groups[1:]
        include = ", ".join(json.dumps(re.escape(g)) for g in okta_groups + app_groups)
        settings = (f'group_types = ["OKTA_GROUP"]\ngroup_include = [{include}]\n'
                    f"group_exclude = [{json.dumps(re.escape(excluded))}]")
        config = load(write_config(tmp_path, running, targets=("jira",), extra_app=settings))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        on_jira = target_groups((await states(running))["jira"])
        assert set(included) <= on_jira
        assert excluded not in on_jira  # group_exclude
        assert not set(app_groups) & on_jira  # group_types
        assert "Everyone" not in on_jira  # BUILT_IN is not in group_types


@pytest.mark.asyncio
async def test_group_rename_gives_the_target_group_its_new_name(tmp_path: Path) -> None:
    async with estate(users=60, groups=8) as running:
        okta = (await states(running))["okta"]
        scope = ordinary_groups(okta)
        gid, name = sorted(scope.items(), key=lambda kv: kv[1])[0]
        members = [u for u in ordinary(okta) if gid in groups_of(okta, u["id"])]
        assert members
        config = load(write_config(tmp_path, running, targets=("jira",),
                                   extra_app=f'group_rename = {{ "{name}" = "jira-renamed" }}'))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        jira = (await states(running))["jira"]
        assert "jira-renamed" in target_groups(jira) and name not in target_groups(jira)
        for user in members:
            account = account_json(jira, username(user))
            assert account is not None and "jira-renamed" in account["groups"]


# -- app: targets; target: adopt_existing ---------------------------------------------------------


@pytest.mark.asyncio
async def test_an_app_writes_only_to_its_targets(tmp_path: Path) -> None:
    async with estate(users=30, groups=6) as running:
        before = await stats(running)
        config = load(write_config(tmp_path, running, targets=("confluence",)))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await stats(running)
        assert after["jira"]["requests"] == before["jira"]["requests"]  # not even a read
        assert write_requests(after["confluence"]) > 30
        assert list(result.summaries[APP]["targets"]) == ["confluence"]


@pytest.mark.asyncio
async def test_a_targets_adopt_existing_overrides_the_apps(tmp_path: Path) -> None:
    async with estate(users=40, groups=6) as running:
        okta = (await states(running))["okta"]
        person = ordinary(okta)[0]
        existing = {"name": username(person), "email": person["profile"]["email"],
                    "displayName": "Old Name", "active": True}
        running.jira.preload(users=[existing], memberships=[])
        running.confluence.preload(users=[existing], memberships=[])
        config = load(write_config(tmp_path, running, extra_app='adopt_existing = "always"',
                                   extra_jira='adopt_existing = "never"'))
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        after = await states(running)
        assert [p["okta_id"] for p in problems(result, "jira", "conflict")] == [person["id"]]
        kept = account_json(after["jira"], username(person))
        assert kept is not None and kept["displayName"] == "Old Name"
        assert not problems(result, "confluence", "conflict")  # the app's "always": adopted
        adopted = account_json(after["confluence"], username(person))
        assert adopted is not None and "confluence-users" in adopted["groups"]


# -- app: schedule ------------------------------------------------------------------------------


def test_schedule_is_how_often_serve_syncs_and_warns_no_more(tmp_path: Path) -> None:
    """`schedule` is read (``oktasync serve`` uses it: tests.engine.test_serve) and is no
    longer a setting that "has no effect yet"."""
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    path = tmp_path / "oktasync.toml"
    path.write_text(text.replace('targets = ["jira", "confluence"]',
                                 'targets = ["jira", "confluence"]\nschedule = "15m"'), "utf-8")
    path.chmod(0o600)  # its demo tokens are written in it
    config = load_config(path, env={})
    assert config.apps[0].schedule_s == 900 and config.warnings == ()
    done = subprocess.run([sys.executable, "-m", "oktasync", "config", "check", "--config",
                           str(path)], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


# -- the pace: okta_concurrency, concurrency, max_in_flight, max_rps ------------------------------


@pytest.mark.asyncio
async def test_okta_concurrency_caps_requests_to_okta(tmp_path: Path) -> None:
    peaks = {}
    for limit in (2, 8):
        async with estate(users=40, groups=16, latency_ms=20) as running, \
                counting_proxy(running.okta_url) as proxy:
            (tmp_path / str(limit)).mkdir()
            path = write_config(tmp_path / str(limit), running, targets=("jira",))
            path.write_text(path.read_text(encoding="utf-8").replace(
                "okta_concurrency = 8", f"okta_concurrency = {limit}"), encoding="utf-8")
            result = await run_sync(load(through(path, running.okta_url, proxy)), SyncOptions(),
                                    echo=quiet)
            assert result.exit_code == 0, result.summaries[APP]["notes"]
            peaks[limit] = proxy.peak
    assert peaks[2] <= 2 < peaks[8] <= 8, peaks


@pytest.mark.asyncio
@pytest.mark.parametrize(("setting", "cap"), [("", 16), ("concurrency = 3", 3),
                                              ("max_in_flight = 2", 2)])
async def test_concurrency_and_max_in_flight_cap_requests_in_flight(
    tmp_path: Path, setting: str, cap: int,
) -> None:
    async with estate(users=60, groups=6, latency_ms=20) as running, \
            counting_proxy(running.jira_url) as proxy:
        path = write_config(tmp_path, running, targets=("jira",),
                            concurrency=cap if setting.startswith("concurrency") else 16)
        if setting.startswith("max_in_flight"):  # [pipeline] is the file's last section
            path.write_text(path.read_text(encoding="utf-8") + f"{setting}\n", "utf-8")
        config = load(through(path, running.jira_url, proxy))
        assert (config.targets["jira"].concurrency, config.pipeline.max_in_flight) == {
            "": (16, 0), "concurrency = 3": (3, 0), "max_in_flight = 2": (16, 2)}[setting]
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        assert len(proxy.arrivals) > 100
        assert cap // 2 < proxy.peak <= cap, proxy.peak


@pytest.mark.asyncio
async def test_max_rps_caps_the_request_rate(tmp_path: Path) -> None:
    rate = 40
    async with estate(users=30, groups=4) as running, counting_proxy(running.jira_url) as proxy:
        path = write_config(tmp_path, running, targets=("jira",), extra_jira=f"max_rps = {rate}")
        result = await run_sync(load(through(path, running.jira_url, proxy)), SyncOptions(),
                                echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        arrivals = proxy.arrivals
        assert len(arrivals) > 2 * rate
        # a leaky bucket of `rate` per second: over any span, at most rate/s plus one bucketful
        span = arrivals[-1] - arrivals[0]
        assert len(arrivals) <= rate * span + rate + 1, (len(arrivals), span)
        busiest = max(sum(1 for t in arrivals if start <= t < start + 1) for start in arrivals)
        assert busiest <= 2 * rate + 1, busiest


# -- pipeline: queue_size ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_queue_of_one_still_reaches_the_desired_state(tmp_path: Path) -> None:
    """queue_size bounds the planned writes held between reading and writing (memory); the
    smallest queue changes the pace, never the outcome."""
    async with estate(users=60, groups=6) as running:
        before = await states(running)
        config = load(write_config(tmp_path, running, queue_size=1))
        assert config.pipeline.queue_size == 1
        result = await run_sync(config, SyncOptions(), echo=quiet)
        assert result.exit_code == 0, result.summaries[APP]["notes"]
        await assert_oracle(running, before)
        assert counts(result, "jira")["users_created"] > 30


def test_readme_lists_every_setting_as_the_schema_says() -> None:
    """The README's settings reference is the declarations' own (``make readme``), so every
    setting is documented for the user in the words the schema and example.toml use."""
    from oktasync.settings import markdown_reference

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert block == "\n".join(markdown_reference()) + "\n", "stale: run make readme"
    for setting in schema_settings():
        key = setting.split(".")[1]
        assert f"| `{key}` |" in block, setting
