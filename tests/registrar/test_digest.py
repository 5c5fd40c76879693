"""Digest authentication: RFC vectors, nonces, stale, replay, enumeration, parsing."""

from __future__ import annotations

import base64
import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.registrar.digest import (
    MAX_CLOCK_SKEW,
    Algorithm,
    AuthOutcome,
    DigestAuthenticator,
    DigestCredentials,
    DigestError,
    NonceCounts,
    NonceState,
    compute_ha1,
    digest_response,
    parse_credentials,
)
from gateway.sip.headers import format_auth, parse_auth

SECRET = b"0123456789abcdef-test-secret"
REALM = "voip.example.fi"
URI = "sip:voip.example.fi"
NOW = 1_700_000_000.0
SALT = b"\x01" * 8


def _auth(**kwargs: object) -> DigestAuthenticator:
    options: dict[str, object] = {"realm": REALM, "secret": SECRET}
    options.update(kwargs)
    return DigestAuthenticator(**options)  # type: ignore[arg-type]


def _answer(
    challenge: str,
    *,
    username: str = "alice",
    password: str = "s3cret",
    method: str = "REGISTER",
    uri: str = URI,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    qop: str | None = "auth",
) -> DigestCredentials:
    """What a client computes from one of our challenges."""
    _, params = parse_auth(challenge)
    algorithm = Algorithm.from_token(params["algorithm"])
    assert algorithm is not None
    ha1 = compute_ha1(username, params["realm"], password, algorithm)
    response = digest_response(
        ha1=ha1,
        algorithm=algorithm,
        method=method,
        uri=uri,
        nonce=params["nonce"],
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if qop else None,
    )
    return DigestCredentials(
        username=username,
        realm=params["realm"],
        nonce=params["nonce"],
        uri=uri,
        response=response,
        algorithm=algorithm,
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if qop else None,
        opaque=params["opaque"],
    )


def _ha1(algorithm: Algorithm, password: str = "s3cret") -> str:
    return compute_ha1("alice", REALM, password, algorithm)


# RFC 7616 section 3.9.1: the same request answered with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "uri": "/dir/index.html",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA_256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: Algorithm, expected: str) -> None:
    v = RFC7616
    ha1 = compute_ha1(v["username"], v["realm"], v["password"], algorithm)
    response = digest_response(
        ha1=ha1,
        algorithm=algorithm,
        method="GET",
        uri=v["uri"],
        nonce=v["nonce"],
        qop="auth",
        nc="00000001",
        cnonce=v["cnonce"],
    )
    assert response == expected


def test_rfc2617_vector() -> None:
    # RFC 2617 section 3.5 (note "Circle Of Life" with a capital O there).
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", Algorithm.MD5)
    response = digest_response(
        ha1=ha1,
        algorithm=Algorithm.MD5,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_challenges_offer_sha256_first_with_one_nonce() -> None:
    values = _auth().challenges(NOW, SALT)
    parsed = [parse_auth(v) for v in values]
    assert [p["algorithm"] for _, p in parsed] == ["SHA-256", "MD5"]
    assert {p["nonce"] for _, p in parsed} == {parsed[0][1]["nonce"]}
    for scheme, params in parsed:
        assert scheme == "Digest"
        assert params["realm"] == REALM
        assert params["qop"] == "auth"
        assert "stale" not in params
    # RFC 7616 3.3: qop in a challenge is a quoted-string, algorithm a token.
    assert 'qop="auth"' in values[0]
    assert "algorithm=SHA-256" in values[0]
    stale = _auth().challenges(NOW, SALT, stale=True)
    assert all(parse_auth(v)[1]["stale"] == "true" for v in stale)


def test_algorithm_order_and_subset_follow_configuration() -> None:
    values = _auth(algorithms=(Algorithm.MD5,)).challenges(NOW, SALT)
    assert [parse_auth(v)[1]["algorithm"] for v in values] == ["MD5"]


@pytest.mark.parametrize("index", [0, 1], ids=["sha256", "md5"])
def test_correct_response_authenticates(index: int) -> None:
    auth = _auth()
    credentials = _answer(auth.challenges(NOW, SALT)[index])
    result = auth.verify(
        credentials,
        method="REGISTER",
        request_uri=URI,
        ha1=_ha1(credentials.algorithm),
        now=NOW + 1,
    )
    assert result.outcome is AuthOutcome.AUTHENTICATED
    assert result.username == "alice"


def test_wrong_password_and_unknown_user_are_rejected_alike() -> None:
    auth = _auth()
    challenge = auth.challenges(NOW, SALT)[0]
    wrong = _answer(challenge, password="guess")
    known = auth.verify(
        wrong, method="REGISTER", request_uri=URI, ha1=_ha1(Algorithm.SHA_256), now=NOW
    )
    unknown_user = _answer(challenge, username="mallory", password="guess")
    unknown = auth.verify(unknown_user, method="REGISTER", request_uri=URI, ha1=None, now=NOW)
    assert known == unknown
    assert known.outcome is AuthOutcome.REJECTED
    assert known.username is None


def test_unknown_user_uses_a_secret_dummy_ha1() -> None:
    auth = _auth()
    dummy = auth.dummy_ha1("mallory", Algorithm.SHA_256)
    assert dummy == auth.dummy_ha1("mallory", Algorithm.SHA_256)
    assert dummy != auth.dummy_ha1("eve", Algorithm.SHA_256)
    assert dummy != _auth(secret=b"another-secret-of-16b").dummy_ha1("mallory", Algorithm.SHA_256)
    assert len(dummy) == 64
    assert len(auth.dummy_ha1("mallory", Algorithm.MD5)) == 32
    # Even a client that guessed the dummy gets no access: no stored HA1, no user.
    challenge = auth.challenges(NOW, SALT)[0]
    _, params = parse_auth(challenge)
    forged = replace(
        _answer(challenge, username="mallory"),
        response=digest_response(
            ha1=dummy,
            algorithm=Algorithm.SHA_256,
            method="REGISTER",
            uri=URI,
            nonce=params["nonce"],
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        ),
    )
    result = auth.verify(forged, method="REGISTER", request_uri=URI, ha1=None, now=NOW)
    assert result.outcome is AuthOutcome.REJECTED


def test_expired_nonce_with_correct_response_is_stale() -> None:
    auth = _auth(nonce_lifetime=60)
    credentials = _answer(auth.challenges(NOW, SALT)[1])
    ha1 = _ha1(Algorithm.MD5)
    at_limit = auth.verify(credentials, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW + 60)
    assert at_limit.outcome is AuthOutcome.AUTHENTICATED
    later = auth.verify(
        replace(
            credentials,
            nc="00000002",
            response=_answer(auth.challenges(NOW, SALT)[1], nc="00000002").response,
        ),
        method="REGISTER",
        request_uri=URI,
        ha1=ha1,
        now=NOW + 61,
    )
    assert later.outcome is AuthOutcome.STALE
    # RFC 7616 3.3: stale only when the digest is valid; a wrong one is rejected.
    wrong = _answer(auth.challenges(NOW, SALT)[1], password="nope")
    result = auth.verify(wrong, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW + 61)
    assert result.outcome is AuthOutcome.REJECTED


def test_nonce_from_the_future_beyond_skew_is_stale() -> None:
    auth = _auth()
    nonce = auth.make_nonce(NOW + MAX_CLOCK_SKEW + 5, SALT)
    assert auth.check_nonce(nonce, NOW) is NonceState.STALE
    assert auth.check_nonce(auth.make_nonce(NOW + 5, SALT), NOW) is NonceState.VALID


def test_nonce_is_checked_by_another_instance_with_the_same_secret() -> None:
    nonce = _auth().make_nonce(NOW, SALT)
    assert _auth().check_nonce(nonce, NOW + 10) is NonceState.VALID
    assert _auth(secret=b"a-different-secret!").check_nonce(nonce, NOW) is NonceState.FORGED
    assert _auth(realm="other.example").check_nonce(nonce, NOW) is NonceState.FORGED
    assert _auth().make_nonce(NOW, SALT) != _auth().make_nonce(NOW, b"\x02" * 8)


def test_tampered_nonce_is_forged_and_rechallenged() -> None:
    auth = _auth()
    nonce = auth.make_nonce(NOW, SALT)
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    raw[3] ^= 0x01  # move the issue time: the signature no longer matches
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert auth.check_nonce(tampered, NOW) is NonceState.FORGED
    for garbage in ("", "!!!", "abc", "é", nonce[:-2]):
        assert auth.check_nonce(garbage, NOW) is NonceState.FORGED
    credentials = replace(_answer(auth.challenges(NOW, SALT)[0]), nonce=tampered)
    result = auth.verify(
        credentials, method="REGISTER", request_uri=URI, ha1=_ha1(Algorithm.SHA_256), now=NOW
    )
    assert result.outcome is AuthOutcome.CHALLENGE


def test_replayed_nonce_count_is_stale_and_higher_count_passes() -> None:
    auth = _auth()
    challenge = auth.challenges(NOW, SALT)[0]
    ha1 = _ha1(Algorithm.SHA_256)
    first = _answer(challenge, nc="00000001")
    assert auth.verify(first, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW).outcome is (
        AuthOutcome.AUTHENTICATED
    )
    replay = auth.verify(first, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)
    assert replay.outcome is AuthOutcome.STALE
    second = _answer(challenge, nc="00000002", cnonce="other")
    assert auth.verify(second, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW).outcome is (
        AuthOutcome.AUTHENTICATED
    )


def test_nonce_counts_are_bounded_lru() -> None:
    counts = NonceCounts(limit=2)
    assert counts.advance("a", 1)
    assert counts.advance("b", 1)
    assert not counts.advance("a", 1)  # replay; also marks "a" recently used
    assert counts.advance("c", 1)  # evicts "b", the least recently used
    assert len(counts) == 2
    assert counts.advance("b", 1)  # forgotten, so accepted again
    assert not counts.advance("c", 1)


def test_credentials_without_qop_need_rfc2069_mode() -> None:
    strict = _auth()
    challenge = strict.challenges(NOW, SALT)[1]
    credentials = _answer(challenge, qop=None)
    ha1 = _ha1(Algorithm.MD5)
    result = strict.verify(credentials, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)
    assert result.outcome is AuthOutcome.CHALLENGE
    lenient = _auth(accept_rfc2069=True)
    ok = lenient.verify(credentials, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)
    assert ok.outcome is AuthOutcome.AUTHENTICATED
    bad = lenient.verify(
        _answer(challenge, qop=None, password="x"),
        method="REGISTER",
        request_uri=URI,
        ha1=ha1,
        now=NOW,
    )
    assert bad.outcome is AuthOutcome.REJECTED


def test_wrong_opaque_or_qop_is_rechallenged() -> None:
    auth = _auth()
    credentials = _answer(auth.challenges(NOW, SALT)[0])
    ha1 = _ha1(Algorithm.SHA_256)
    for changed in (replace(credentials, opaque="x"), replace(credentials, qop="auth-int")):
        result = auth.verify(changed, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)
        assert result.outcome is AuthOutcome.CHALLENGE


def test_digest_uri_must_name_the_request_uri() -> None:
    auth = _auth()
    ha1 = _ha1(Algorithm.SHA_256)
    challenge = auth.challenges(NOW, SALT)[0]
    # A transport parameter in the digest-uri is tolerated (pyVoIP sends one) ...
    with_param = _answer(challenge, uri=URI + ";transport=UDP")
    result = auth.verify(with_param, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)
    assert result.outcome is AuthOutcome.AUTHENTICATED
    # ... another host is not (RFC 7616 3.4.6: 400).
    elsewhere = _answer(challenge, uri="sip:elsewhere.example", nc="00000002")
    with pytest.raises(DigestError):
        auth.verify(elsewhere, method="REGISTER", request_uri=URI, ha1=ha1, now=NOW)


def test_method_is_part_of_the_hash() -> None:
    auth = _auth()
    credentials = _answer(auth.challenges(NOW, SALT)[0], method="INVITE")
    result = auth.verify(
        credentials, method="REGISTER", request_uri=URI, ha1=_ha1(Algorithm.SHA_256), now=NOW
    )
    assert result.outcome is AuthOutcome.REJECTED


def test_select_picks_our_realm_and_offered_algorithm() -> None:
    auth = _auth(algorithms=(Algorithm.SHA_256,))
    common = 'username="alice", nonce="n", uri="sip:x", response="ab"'
    other_realm = f'Digest realm="elsewhere", {common}, algorithm=SHA-256'
    md5 = f'Digest realm="{REALM}", {common}, algorithm=MD5'
    ours = f'Digest realm="{REALM}", {common}, algorithm=SHA-256'
    assert auth.select([other_realm, md5]) is None
    selected = auth.select([other_realm, md5, ours])
    assert selected is not None
    assert selected.algorithm is Algorithm.SHA_256
    # RFC 4475 3.3.7 regaut01: an unknown scheme means "no credentials": challenge.
    assert auth.select(["NoOneKnowsThisScheme opaque-data=here"]) is None
    assert auth.select([]) is None


def test_parse_credentials() -> None:
    value = format_auth(
        "Digest",
        {
            "username": "alice",
            "realm": REALM,
            "nonce": "abc",
            "uri": URI,
            "response": "ABCDEF",
            "algorithm": "sha-256",
            "qop": "auth",
            "nc": "0000000a",
            "cnonce": "xyz",
        },
    )
    credentials = parse_credentials(value)
    assert credentials is not None
    assert credentials.algorithm is Algorithm.SHA_256
    assert credentials.response == "abcdef"
    assert (credentials.nc, credentials.cnonce, credentials.opaque) == ("0000000a", "xyz", None)
    # RFC 7616 3.4: without algorithm, MD5.
    md5 = parse_credentials('Digest username="a", realm="r", nonce="n", uri="sip:x", response="00"')
    assert md5 is not None
    assert md5.algorithm is Algorithm.MD5
    assert (
        parse_credentials(
            'Digest username="a", realm="r", nonce="n", uri="u", '
            'response="0", algorithm=SHA-512-256'
        )
        is None
    )
    assert parse_credentials("Basic YWxhZGRpbjpvcGVuc2VzYW1l") is None


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", uri="u", response="0"',  # no username
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth',  # no nc
        'Digest username="a", realm="r", nonce="n", uri="u", response="0", qop=auth, '
        'nc=1, cnonce="c"',  # nc not 8 hex digits
        'Digest username="a", username="b"',  # duplicate parameter
        'Digest username="unterminated',
    ],
)
def test_malformed_digest_credentials_raise(value: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(value)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        _auth(secret=b"short")
    with pytest.raises(ValueError, match="algorithm"):
        _auth(algorithms=())
    with pytest.raises(ValueError, match="positive"):
        _auth(nonce_lifetime=0)
    with pytest.raises(ValueError, match="8 bytes"):
        _auth().make_nonce(NOW, b"123")


@given(st.text(max_size=300))
def test_parse_credentials_only_raises_digest_error(value: str) -> None:
    with contextlib.suppress(DigestError):
        parse_credentials(value)


@given(st.text(max_size=80), st.floats(allow_nan=False, allow_infinity=False))
def test_check_nonce_never_raises(nonce: str, now: float) -> None:
    assert _auth().check_nonce(nonce, now) in set(NonceState)


@given(st.floats(min_value=0, max_value=4e9), st.binary(min_size=8, max_size=8))
def test_issued_nonces_verify_within_lifetime(now: float, salt: bytes) -> None:
    auth = _auth(nonce_lifetime=300)
    nonce = auth.make_nonce(now, salt)
    assert auth.check_nonce(nonce, now) is NonceState.VALID
    assert auth.check_nonce(nonce, now + 299) is NonceState.VALID
    assert auth.check_nonce(nonce, now + 301) is NonceState.STALE
