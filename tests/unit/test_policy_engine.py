"""The contact-policy and priority engine, with explicit clocks.

Caps defer to the exact instant the oldest counted message leaves its rolling
window; quiet hours are local wall times of the contact, DST included; a slot
past the expiry expires; one call settles competing sends by priority.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.policy.engine import (
    PRIORITY,
    Candidate,
    Cap,
    ContactPolicy,
    Decision,
    QuietHours,
    Sent,
    applicable,
    decide,
    default_priority,
    parse_scope,
    quiet_end,
)

PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # 12:00 in Prague (CEST)
H = timedelta(hours=1)


def policy(
    policy_id: str = "promo-cap",
    scope: str = "all",
    caps: tuple[Cap, ...] = (),
    quiet: tuple[time, time] | None = None,
    expire_after_hours: int = 72,
) -> ContactPolicy:
    return ContactPolicy(
        policy_id=policy_id,
        name=policy_id.title(),
        scope=scope,
        caps=caps,
        quiet_hours=QuietHours(*quiet) if quiet else None,
        expire_after_hours=expire_after_hours,
    )


def email(key: str = "c1", priority: int = 10, queued_at: datetime = NOW, **extra: str) -> Candidate:
    return Candidate(
        key=key,
        channel=extra.get("channel", "email"),
        priority=priority,
        queued_at=queued_at,
        category=extra.get("category"),
        campaign_group=extra.get("campaign_group"),
    )


def one(
    candidate: Candidate,
    history: list[Sent],
    policies: list[ContactPolicy],
    zone: ZoneInfo = PRAGUE,
    now: datetime = NOW,
) -> Decision:
    [decision] = decide([candidate], history, policies, zone, now)
    return decision


# --------------------------------------------------------------------------
# Caps
# --------------------------------------------------------------------------


def test_no_policy_sends_at_once() -> None:
    history = [Sent("email", NOW - timedelta(minutes=m)) for m in range(1, 50)]
    assert one(email(), history, []) == Decision("c1", "send", NOW, None, None)


def test_under_the_cap_sends_now() -> None:
    rules = [policy(caps=(Cap("email", 2, 24),))]
    decision = one(email(), [Sent("email", NOW - 3 * H)], rules)
    assert (decision.outcome, decision.at, decision.reason) == ("send", NOW, None)


def test_a_full_cap_defers_to_the_instant_the_oldest_message_leaves_the_window() -> None:
    rules = [policy(caps=(Cap("email", 2, 24),))]
    history = [Sent("email", NOW - 3 * H), Sent("email", NOW - 20 * H - timedelta(minutes=7))]
    decision = one(email(), history, rules)
    assert decision == Decision(
        "c1", "defer", NOW + 3 * H + timedelta(minutes=53), "cap email 2 per 24h (policy promo-cap)", "promo-cap"
    )


def test_the_window_is_half_open_a_message_exactly_one_window_old_no_longer_counts() -> None:
    rules = [policy(caps=(Cap("email", 1, 24),))]
    assert one(email(), [Sent("email", NOW - 24 * H)], rules).outcome == "send"
    late = one(email(), [Sent("email", NOW - 24 * H + timedelta(seconds=1))], rules)
    assert (late.outcome, late.at) == ("defer", NOW + timedelta(seconds=1))


def test_leaving_the_window_repeats_until_there_is_room() -> None:
    # Four messages in the window, room for two: wait until the two oldest have left.
    rules = [policy(caps=(Cap("email", 2, 24),))]
    history = [Sent("email", NOW - hours * H) for hours in (1, 5, 9, 23)]
    decision = one(email(), history, rules)
    assert decision.at == NOW - 5 * H + 24 * H


def test_a_cap_counts_and_holds_only_its_own_channel() -> None:
    rules = [policy(caps=(Cap("email", 1, 24),))]
    sms_history = [Sent("sms", NOW - H), Sent("push", NOW - H)]
    assert one(email(), sms_history, rules).outcome == "send"
    assert one(email(channel="sms"), [Sent("email", NOW - H)], rules).outcome == "send"


def test_an_any_cap_counts_every_channel() -> None:
    rules = [policy(caps=(Cap("any", 2, 48),))]
    history = [Sent("sms", NOW - 2 * H), Sent("push", NOW - 10 * H)]
    decision = one(email(), history, rules)
    assert (decision.outcome, decision.at) == ("defer", NOW + 38 * H)
    assert decision.reason == "cap any 2 per 48h (policy promo-cap)"


def test_several_caps_wait_for_the_last_of_them_and_name_each() -> None:
    rules = [policy(caps=(Cap("email", 1, 24), Cap("any", 3, 168)))]
    history = [Sent("email", NOW - 2 * H), Sent("sms", NOW - 10 * H), Sent("push", NOW - 100 * H)]
    decision = one(email(), history, rules)
    assert decision.at == NOW + 68 * H  # the weekly cap: the push leaves after 168 h
    assert decision.reason == "cap email 1 per 24h (policy promo-cap); cap any 3 per 168h (policy promo-cap)"
    # An SMS is held only by the weekly cap.
    sms = one(email(channel="sms"), history, rules)
    assert (sms.at, sms.reason) == (NOW + 68 * H, "cap any 3 per 168h (policy promo-cap)")


def test_caps_of_several_policies_combine_and_the_first_blocker_names_the_policy() -> None:
    rules = [policy("daily", caps=(Cap("email", 1, 24),)), policy("hourly", caps=(Cap("email", 1, 1),))]
    decision = one(email(), [Sent("email", NOW - timedelta(minutes=30))], rules)
    assert decision.at == NOW + timedelta(hours=23, minutes=30)
    assert decision.policy_id == "daily"
    assert "policy hourly" in (decision.reason or "")


# --------------------------------------------------------------------------
# Quiet hours
# --------------------------------------------------------------------------

NIGHT = (time(21, 0), time(8, 0))


def test_quiet_hours_wrapping_midnight_defer_to_their_local_end() -> None:
    rules = [policy("quiet", quiet=NIGHT)]
    late = datetime(2026, 5, 4, 20, 30, tzinfo=UTC)  # 22:30 in Prague
    decision = one(email(), [], rules, now=late)
    assert decision == Decision(
        "c1",
        "defer",
        datetime(2026, 5, 5, 6, 0, tzinfo=UTC),  # 08:00 CEST
        "quiet hours 21:00-08:00 Europe/Prague (policy quiet)",
        "quiet",
    )
    early = datetime(2026, 5, 5, 3, 15, tzinfo=UTC)  # 05:15 in Prague, after midnight
    assert one(email(), [], rules, now=early).at == datetime(2026, 5, 5, 6, 0, tzinfo=UTC)


def test_quiet_hours_are_half_open_and_use_the_contacts_zone() -> None:
    rules = [policy("quiet", quiet=NIGHT)]
    assert one(email(), [], rules, now=datetime(2026, 5, 4, 18, 59, tzinfo=UTC)).outcome == "send"  # 20:59
    assert one(email(), [], rules, now=datetime(2026, 5, 4, 19, 0, tzinfo=UTC)).outcome == "defer"  # 21:00
    assert one(email(), [], rules, now=datetime(2026, 5, 5, 6, 0, tzinfo=UTC)).outcome == "send"  # 08:00
    # 22:30 in Prague is 16:30 in New York: not quiet there.
    assert one(email(), [], rules, zone=NEW_YORK, now=datetime(2026, 5, 4, 20, 30, tzinfo=UTC)).outcome == "send"


def test_quiet_hours_on_the_spring_forward_night_end_at_local_eight() -> None:
    rules = [policy("quiet", quiet=NIGHT, expire_after_hours=24)]
    # Prague moves from CET to CEST at 02:00 on 29 March 2026: 08:00 is 06:00 UTC, not 07:00.
    evening = datetime(2026, 3, 28, 21, 0, tzinfo=UTC)  # 22:00 CET
    assert one(email(queued_at=evening), [], rules, now=evening).at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # The night before, 08:00 is still 07:00 UTC.
    before = datetime(2026, 3, 27, 21, 0, tzinfo=UTC)
    assert one(email(queued_at=before), [], rules, now=before).at == datetime(2026, 3, 28, 7, 0, tzinfo=UTC)


def test_quiet_hours_on_the_fall_back_night_end_at_local_eight() -> None:
    rules = [policy("quiet", quiet=NIGHT)]
    # Prague moves from CEST to CET at 03:00 on 25 October 2026: 08:00 is 07:00 UTC.
    evening = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert one(email(queued_at=evening), [], rules, now=evening).at == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
    # 02:30 happens twice that night; the quiet hours end at the first.
    hours = QuietHours(time(21), time(2, 30))
    assert quiet_end(hours, PRAGUE, evening) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # After the clocks go back it is 02:10 again, quiet again until the second 02:30.
    assert quiet_end(hours, PRAGUE, datetime(2026, 10, 25, 1, 10, tzinfo=UTC)) == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )


def test_quiet_hours_ending_inside_the_spring_forward_gap_end_at_the_jump() -> None:
    # 02:30 does not exist on 29 March 2026 in Prague: the clock jumps from 02:00 CET to 03:00 CEST.
    hours = QuietHours(time(21), time(2, 30))
    assert quiet_end(hours, PRAGUE, datetime(2026, 3, 28, 23, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # New York jumps at 02:00 EST (07:00 UTC) on 8 March 2026.
    assert quiet_end(hours, NEW_YORK, datetime(2026, 3, 8, 3, 0, tzinfo=UTC)) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_cap_slot_inside_quiet_hours_moves_to_their_end_and_both_are_named() -> None:
    rules = [policy("promo-cap", caps=(Cap("email", 1, 24),)), policy("quiet", quiet=NIGHT)]
    # The cap has room again at 22:00 Prague time, inside the quiet hours: wait for 08:00.
    sent = datetime(2026, 5, 3, 20, 0, tzinfo=UTC)
    decision = one(email(), [Sent("email", sent)], rules, now=datetime(2026, 5, 4, 9, 0, tzinfo=UTC))
    assert decision.at == datetime(2026, 5, 5, 6, 0, tzinfo=UTC)
    assert decision.reason == (
        "cap email 1 per 24h (policy promo-cap); quiet hours 21:00-08:00 Europe/Prague (policy quiet)"
    )
    assert decision.policy_id == "promo-cap"


def test_overlapping_quiet_hours_of_two_policies_chain() -> None:
    rules = [policy("night", quiet=NIGHT), policy("morning", quiet=(time(7, 30), time(9, 0)))]
    decision = one(email(), [], rules, now=datetime(2026, 5, 4, 20, 0, tzinfo=UTC))  # 22:00
    assert decision.at == datetime(2026, 5, 5, 7, 0, tzinfo=UTC)  # 09:00 CEST


# --------------------------------------------------------------------------
# Expiry
# --------------------------------------------------------------------------


def test_a_slot_past_the_expiry_expires_with_its_reason() -> None:
    rules = [policy(caps=(Cap("email", 1, 24),), expire_after_hours=72)]
    history = [Sent("email", NOW - 2 * H)]  # room again at NOW + 22 h
    expired = one(email(queued_at=NOW - 51 * H), history, rules)  # expires at NOW + 21 h
    assert expired == Decision("c1", "expire", None, "cap email 1 per 24h (policy promo-cap)", "promo-cap")
    # Expiring exactly at the slot still defers ("later than" expires).
    on_time = one(email(queued_at=NOW - 50 * H), history, rules)
    assert (on_time.outcome, on_time.at) == ("defer", NOW + 22 * H)


def test_the_smallest_expiry_of_the_applicable_policies_wins() -> None:
    rules = [
        policy("long", caps=(Cap("email", 1, 24),), expire_after_hours=720),
        policy("short", scope="category:promo", expire_after_hours=6),
        policy("other", scope="category:news", expire_after_hours=1),
    ]
    history = [Sent("email", NOW - 2 * H)]
    assert one(email(category="promo"), history, rules).outcome == "expire"  # 6 h < 22 h
    assert one(email(category="other"), history, rules).outcome == "defer"  # 720 h


def test_an_unblocked_send_goes_even_if_queued_long_ago() -> None:
    rules = [policy(caps=(Cap("email", 1, 24),), expire_after_hours=1)]
    assert one(email(queued_at=NOW - 100 * H), [], rules).outcome == "send"


def test_whole_day_quiet_hours_expire_instead_of_searching_forever() -> None:
    rules = [policy("a", quiet=(time(20), time(9))), policy("b", quiet=(time(8), time(21)))]
    assert one(email(), [], rules).outcome == "expire"


# --------------------------------------------------------------------------
# Priority
# --------------------------------------------------------------------------


def test_default_priorities_follow_seed_003() -> None:
    assert default_priority("ad_hoc", None) == PRIORITY["ad_hoc"] == 10
    assert default_priority("trigger", "date") == 20
    assert default_priority("lifecycle", None) == 30
    assert default_priority("trigger", "event") == 40
    assert default_priority("trigger", None) == 40
    with pytest.raises(ValueError, match="unknown campaign kind"):
        default_priority("flash", None)


def test_four_competing_kinds_under_one_per_day_the_ad_hoc_goes_and_the_rest_defer() -> None:
    rules = [policy(caps=(Cap("any", 1, 24),))]
    # Queued in the opposite order of priority, so queue order cannot be what decides.
    candidates = [
        email("login", default_priority("trigger", "event"), NOW - 4 * H),
        email("lifecycle", default_priority("lifecycle", None), NOW - 3 * H),
        email("birthday", default_priority("trigger", "date"), NOW - 2 * H),
        email("sale", default_priority("ad_hoc", None), NOW - 1 * H),
    ]
    decisions = decide(candidates, [], rules, PRAGUE, NOW)
    assert [(d.key, d.outcome) for d in decisions] == [
        ("sale", "send"),
        ("birthday", "defer"),
        ("lifecycle", "defer"),
        ("login", "defer"),
    ]
    assert all(d.at == NOW + 24 * H for d in decisions[1:])
    assert {d.reason for d in decisions[1:]} == {"cap any 1 per 24h (policy promo-cap)"}


def test_a_campaign_override_beats_the_kind_default() -> None:
    rules = [policy(caps=(Cap("email", 1, 24),))]
    decisions = decide([email("sale", 10), email("login", 5)], [], rules, PRAGUE, NOW)
    assert [(d.key, d.outcome) for d in decisions] == [("login", "send"), ("sale", "defer")]


def test_ties_go_by_queue_time_then_key_and_each_send_counts_for_the_next() -> None:
    rules = [policy(caps=(Cap("email", 2, 24),))]
    candidates = [email("b", 20, NOW - H), email("a", 20, NOW - H), email("early", 20, NOW - 2 * H)]
    decisions = decide(candidates, [], rules, PRAGUE, NOW)
    assert [(d.key, d.outcome) for d in decisions] == [("early", "send"), ("a", "send"), ("b", "defer")]
    assert decisions[2].at == NOW + 24 * H


# --------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------


def test_scopes_select_the_applicable_policies() -> None:
    everything = policy("all", "all")
    promo = policy("promo", "category:promo")
    vip = policy("vip", "campaign_group:VIP club")
    rules = [everything, promo, vip]
    assert applicable(rules, "promo", None) == [everything, promo]
    assert applicable(rules, "news", "VIP club") == [everything, vip]
    assert applicable(rules, None, None) == [everything]
    assert applicable(rules, "promo", "VIP club") == rules


def test_a_category_policy_counts_only_messages_of_its_category() -> None:
    rules = [policy("promo", "category:promo", caps=(Cap("email", 1, 24),))]
    news = [Sent("email", NOW - H, category="news")]
    assert one(email(category="promo"), news, rules).outcome == "send"
    promo = [Sent("email", NOW - H, category="promo")]
    assert one(email(category="promo"), promo, rules).outcome == "defer"
    # A news send is not in the policy's scope at all.
    assert one(email(category="news"), promo, rules).outcome == "send"


def test_a_campaign_group_policy_counts_only_messages_of_its_group() -> None:
    rules = [policy("vip", "campaign_group:vip", caps=(Cap("sms", 1, 24),))]
    other = [Sent("sms", NOW - H, category="promo", campaign_group="retail")]
    assert one(email(channel="sms", campaign_group="vip"), other, rules).outcome == "send"
    same = [Sent("sms", NOW - H, category="news", campaign_group="vip")]
    assert one(email(channel="sms", campaign_group="vip"), same, rules).outcome == "defer"


def test_an_all_policy_counts_messages_of_every_category() -> None:
    rules = [policy("all", "all", caps=(Cap("email", 1, 24),))]
    assert one(email(category="promo"), [Sent("email", NOW - H, category="news")], rules).outcome == "defer"


def test_bad_definitions_are_refused() -> None:
    assert parse_scope("all") == ("all", None)
    assert parse_scope("category:Black Friday") == ("category", "Black Friday")
    for scope in ("", "everything", "category:", "group:x", "category: x", "campaign_group:a/b"):
        with pytest.raises(ValueError):
            parse_scope(scope)
    with pytest.raises(ValueError):
        Cap("fax", 1, 24)
    with pytest.raises(ValueError):
        Cap("email", 0, 24)
    with pytest.raises(ValueError):
        QuietHours(time(8), time(8))
    with pytest.raises(ValueError):
        decide([email()], [], [], PRAGUE, datetime(2026, 5, 4, 10))  # a naive clock


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Prague", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")]
# Around the 2026 DST changes of the zones above, and an ordinary day.
NOWS = [
    datetime(2026, 3, 8, 6, 0, tzinfo=UTC),
    datetime(2026, 3, 28, 22, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 14, 0, tzinfo=UTC),
    datetime(2026, 10, 24, 23, 0, tzinfo=UTC),
    datetime(2026, 6, 15, 12, 0, tzinfo=UTC),
]
SCOPES = ["all", "category:promo", "category:news", "campaign_group:vip"]
CATEGORIES = st.sampled_from([None, "promo", "news"])
GROUPS = st.sampled_from([None, "vip"])
CHANNELS = st.sampled_from(["email", "sms", "push"])
CAPS = st.builds(
    Cap, st.sampled_from(["email", "sms", "push", "any"]), st.integers(1, 4), st.sampled_from([1, 3, 24, 48, 168])
)
WALL = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
QUIET = st.tuples(WALL, WALL).filter(lambda pair: pair[0] != pair[1]).map(lambda pair: QuietHours(*pair))
POLICIES = st.lists(
    st.builds(
        ContactPolicy,
        policy_id=st.sampled_from(["p1", "p2", "p3"]),
        name=st.just("p"),
        scope=st.sampled_from(SCOPES),
        caps=st.lists(CAPS, max_size=3).map(tuple),
        quiet_hours=st.none() | QUIET,
        expire_after_hours=st.sampled_from([1, 12, 72, 720]),
    ),
    max_size=3,
)


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[Candidate], list[Sent], list[ContactPolicy], ZoneInfo, datetime]:
    now = draw(st.sampled_from(NOWS)) + timedelta(minutes=draw(st.integers(0, 48 * 60)))
    minutes_ago = st.integers(0, 200 * 60).map(lambda m: now - timedelta(minutes=m))
    history = draw(st.lists(st.builds(Sent, CHANNELS, minutes_ago, CATEGORIES, GROUPS), max_size=12))
    candidates = draw(
        st.lists(
            st.builds(
                Candidate,
                st.text("abcdef", min_size=1, max_size=3),
                CHANNELS,
                st.integers(1, 100),
                minutes_ago,
                CATEGORIES,
                GROUPS,
            ),
            min_size=1,
            max_size=5,
            unique_by=lambda c: c.key,
        )
    )
    return candidates, history, draw(POLICIES), draw(st.sampled_from(ZONES)), now


def _count(messages: list[Sent], rules: list[ContactPolicy], rule: ContactPolicy, cap: Cap, end: datetime) -> int:
    """Messages the cap counts in the window ending at ``end``: (end - window, end]."""
    return sum(
        1
        for m in messages
        if cap.covers(m.channel) and rule.covers(m.category, m.campaign_group) and end - cap.window < m.at <= end
    )


def _blocked(
    candidate: Candidate, messages: list[Sent], rules: list[ContactPolicy], zone: ZoneInfo, at: datetime
) -> bool:
    """Would one more message for ``candidate`` at ``at`` break a cap or fall in quiet hours?"""
    wall = at.astimezone(zone).time()
    for rule in rules:
        if rule.quiet_hours is not None and rule.quiet_hours.contains(wall):
            return True
        for cap in rule.caps:
            if cap.covers(candidate.channel) and _count(messages, rules, rule, cap, at) >= cap.max_messages:
                return True
    return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_decisions_never_break_a_cap_nor_defer_into_quiet_hours(
    situation: tuple[list[Candidate], list[Sent], list[ContactPolicy], ZoneInfo, datetime],
) -> None:
    candidates, history, policies, zone, now = situation
    decisions = decide(candidates, history, policies, zone, now)
    by_key = {c.key: c for c in candidates}
    assert sorted(d.key for d in decisions) == sorted(by_key)
    messages = list(history)
    for decision in decisions:
        candidate = by_key[decision.key]
        rules = applicable(policies, candidate.category, candidate.campaign_group)
        deadline = candidate.queued_at + timedelta(hours=min((p.expire_after_hours for p in rules), default=0))
        if decision.outcome == "send":
            assert decision.at == now and decision.reason is None
            assert not _blocked(candidate, messages, rules, zone, now)
            messages.append(Sent(candidate.channel, now, candidate.category, candidate.campaign_group))
            for rule in rules:
                for cap in rule.caps:
                    if cap.covers(candidate.channel):
                        assert _count(messages, rules, rule, cap, now) <= cap.max_messages
        elif decision.outcome == "defer":
            assert decision.at is not None and now < decision.at <= deadline
            assert decision.reason and decision.policy_id in {p.policy_id for p in rules}
            assert not _blocked(candidate, messages, rules, zone, decision.at)
            # The earliest such instant: a second earlier it is still held back.
            assert _blocked(candidate, messages, rules, zone, decision.at - timedelta(seconds=1))
            assert all(
                not rule.quiet_hours or not rule.quiet_hours.contains(decision.at.astimezone(zone).time())
                for rule in rules
            )
        else:
            assert decision.at is None and decision.reason and decision.policy_id
            # Held back at every instant up to the expiry: spot-check now and the expiry itself.
            assert _blocked(candidate, messages, rules, zone, now)
            if deadline >= now:
                assert _blocked(candidate, messages, rules, zone, deadline)
