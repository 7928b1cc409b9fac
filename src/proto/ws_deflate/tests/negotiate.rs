//! Negotiation: offers and the response each config gives them, declined offers, the first
//! acceptable offer winning, and config ranges.

use crate::proto::ws_deflate::{negotiate, Config, ConfigError, Params, TakeoverMemory};

/// A server that asks for nothing: every answer is driven by the offer alone.
const PLAIN: Config = Config {
    server_no_context_takeover: false,
    client_no_context_takeover: false,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
    compression_level: 6,
    memory_level: 8,
    server_takeover_memory: TakeoverMemory::State,
};

fn response(config: &Config, values: &[&str]) -> Option<String> {
    let params = negotiate(config, values.iter().map(|value| value.as_bytes()))?;
    let mut out = Vec::new();
    params.encode_response(&mut out);
    Some(String::from_utf8(out).expect("ASCII"))
}

/// `(header values, response under PLAIN)`.
const PLAIN_CASES: &[(&[&str], Option<&str>)] = &[
    // RFC 7692 §5.1 and §7.1.3-style offers.
    (&["permessage-deflate"], Some("permessage-deflate")),
    (
        &["permessage-deflate; client_max_window_bits"],
        Some("permessage-deflate"),
    ),
    (
        &["permessage-deflate; client_max_window_bits; server_max_window_bits=10"],
        Some("permessage-deflate; server_max_window_bits=10"),
    ),
    (
        &["permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"],
        Some("permessage-deflate; server_max_window_bits=10"),
    ),
    (
        &["permessage-deflate; server_no_context_takeover"],
        Some("permessage-deflate; server_no_context_takeover"),
    ),
    (
        &["permessage-deflate; client_no_context_takeover"],
        Some("permessage-deflate; client_no_context_takeover"),
    ),
    (
        &["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; client_max_window_bits=15"],
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"),
    ),
    // What browsers send.
    (
        &["permessage-deflate; client_max_window_bits"],
        Some("permessage-deflate"),
    ),
    (
        &["permessage-deflate; client_max_window_bits=15"],
        Some("permessage-deflate"),
    ),
    // Window bounds: 8..=15, a value required for the server's, optional for the client's.
    (
        &["permessage-deflate; server_max_window_bits=8"],
        Some("permessage-deflate; server_max_window_bits=8"),
    ),
    (
        &["permessage-deflate; server_max_window_bits=9"],
        Some("permessage-deflate; server_max_window_bits=9"),
    ),
    (
        &["permessage-deflate; server_max_window_bits=15"],
        Some("permessage-deflate; server_max_window_bits=15"),
    ),
    (&["permessage-deflate; server_max_window_bits=7"], None),
    (&["permessage-deflate; server_max_window_bits=16"], None),
    (&["permessage-deflate; server_max_window_bits=0"], None),
    (&["permessage-deflate; server_max_window_bits=010"], None),
    (&["permessage-deflate; server_max_window_bits=09"], None),
    (&["permessage-deflate; server_max_window_bits=+9"], None),
    (&["permessage-deflate; server_max_window_bits=9a"], None),
    (&["permessage-deflate; server_max_window_bits=255"], None),
    (&["permessage-deflate; server_max_window_bits=99999999999"], None),
    (&["permessage-deflate; server_max_window_bits"], None),
    (&["permessage-deflate; server_max_window_bits="], None),
    (&["permessage-deflate; server_max_window_bits=\"\""], None),
    (
        &["permessage-deflate; client_max_window_bits=8"],
        Some("permessage-deflate"),
    ),
    (&["permessage-deflate; client_max_window_bits=7"], None),
    (&["permessage-deflate; client_max_window_bits=16"], None),
    (&["permessage-deflate; client_max_window_bits="], None),
    // Quoted values unescape to a token (RFC 6455 §9.1).
    (
        &["permessage-deflate; server_max_window_bits=\"10\""],
        Some("permessage-deflate; server_max_window_bits=10"),
    ),
    (
        &["permessage-deflate; server_max_window_bits=\"1\\0\""],
        Some("permessage-deflate; server_max_window_bits=10"),
    ),
    (&["permessage-deflate; server_max_window_bits=\"1 0\""], None),
    (&["permessage-deflate; server_max_window_bits=\"10"], None),
    // Flags take no value.
    (&["permessage-deflate; server_no_context_takeover=1"], None),
    (&["permessage-deflate; client_no_context_takeover=\"\""], None),
    // Each parameter at most once.
    (
        &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
        None,
    ),
    (
        &["permessage-deflate; client_no_context_takeover; Client_No_Context_Takeover"],
        None,
    ),
    (
        &["permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"],
        None,
    ),
    (
        &["permessage-deflate; client_max_window_bits; client_max_window_bits=10"],
        None,
    ),
    // Unknown parameters decline the offer.
    (&["permessage-deflate; foo"], None),
    (&["permessage-deflate; foo=bar"], None),
    (&["permessage-deflate; mux"], None),
    // Broken syntax declines the element.
    (&["permessage-deflate;"], None),
    (&["permessage-deflate; ;server_no_context_takeover"], None),
    (&["permessage-deflate; =10"], None),
    (&["permessage-deflate server_no_context_takeover"], None),
    (&["permessage-deflate; server_max_window_bits=10 11"], None),
    (&["permessage-deflate; server_max_window_bits==10"], None),
    (&["permessage-deflate/1"], None),
    (&["\"permessage-deflate\""], None),
    (&["permessage-deflate; a=\"unterminated, permessage-deflate"], None),
    (&["permessage-deflate; a=\"bad\u{1}byte\", permessage-deflate"], Some("permessage-deflate")),
    // Names are matched without regard to case.
    (
        &["PerMessage-Deflate; Server_No_Context_Takeover; SERVER_MAX_WINDOW_BITS=11"],
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=11"),
    ),
    // Whitespace around delimiters, empty list elements.
    (
        &["  permessage-deflate\t;\tserver_max_window_bits = 10 ; client_no_context_takeover  "],
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10"),
    ),
    (&[", ,permessage-deflate ,,"], Some("permessage-deflate")),
    (&[""], None),
    (&[" , "], None),
    // A declined offer gives way to the next one, in the same field or a later one.
    (
        &["permessage-deflate; foo, permessage-deflate; server_no_context_takeover"],
        Some("permessage-deflate; server_no_context_takeover"),
    ),
    (
        &[
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_no_context_takeover",
        ],
        Some("permessage-deflate; client_no_context_takeover"),
    ),
    (
        &["permessage-deflate; foo=\"a, permessage-deflate; b\", permessage-deflate; server_max_window_bits=12"],
        Some("permessage-deflate; server_max_window_bits=12"),
    ),
    (
        &["permessage-deflate; x=\"a\\\", b\", permessage-deflate"],
        Some("permessage-deflate"),
    ),
    // The first acceptable offer wins.
    (
        &["permessage-deflate; server_max_window_bits=9, permessage-deflate"],
        Some("permessage-deflate; server_max_window_bits=9"),
    ),
    (
        &["permessage-deflate", "permessage-deflate; server_no_context_takeover"],
        Some("permessage-deflate"),
    ),
    // Other extensions are ignored, whatever their parameters.
    (
        &["x-webkit-deflate-frame, foo; bar=\"permessage-deflate\", permessage-deflate"],
        Some("permessage-deflate"),
    ),
    (&["x-webkit-deflate-frame", "deflate-frame; no_context_takeover"], None),
    (&["permessage-deflat", "permessage-deflatex"], None),
    (&["foo; bar=\"a, permessage-deflate\""], None),
    (&[], None),
];

#[test]
fn plain_config_answers_what_is_offered() {
    for (index, (values, expected)) in PLAIN_CASES.iter().enumerate() {
        assert_eq!(
            response(&PLAIN, values).as_deref(),
            *expected,
            "case {index}: {values:?}"
        );
    }
}

#[test]
fn default_config_asks_for_client_no_context_takeover_and_a_small_window() {
    let config = Config::default();
    assert_eq!(config.check(), Ok(()));
    let cases: &[(&str, &str)] = &[
        (
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_max_window_bits=14",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
        ),
    ];
    for (offer, expected) in cases {
        assert_eq!(
            response(&config, &[offer]).as_deref(),
            Some(*expected),
            "{offer}"
        );
    }
}

#[test]
fn client_window_is_asked_for_only_when_offered() {
    let config = Config {
        client_max_window_bits: 10,
        ..PLAIN
    };
    let cases: &[(&str, &str)] = &[
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=8",
        ),
    ];
    for (offer, expected) in cases {
        assert_eq!(
            response(&config, &[offer]).as_deref(),
            Some(*expected),
            "{offer}"
        );
    }
}

#[test]
fn params_carry_the_agreed_windows() {
    let params = negotiate(
        &PLAIN,
        [b"permessage-deflate; server_max_window_bits=8; client_no_context_takeover".as_slice()],
    )
    .expect("accepted");
    assert_eq!(
        params,
        Params {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: Some(8),
            client_max_window_bits: None,
        }
    );
    assert_eq!(params.server_window_bits(), 8);
    assert_eq!(params.client_window_bits(), 15);
}

#[test]
fn every_split_of_a_value_into_two_fields_gives_an_answer_or_none_without_panicking() {
    // Goal: the parser never panics and never loops, whatever a field boundary cuts.
    let value = "a; b=\"x,y\\\"z\", permessage-deflate; server_max_window_bits=\"11\"; client_max_window_bits, c";
    for split in 0..=value.len() {
        let (head, tail) = value.split_at(split);
        let _ = response(&PLAIN, &[head, tail]);
    }
    assert_eq!(
        response(&PLAIN, &[value]).as_deref(),
        Some("permessage-deflate; server_max_window_bits=11")
    );
}

#[test]
fn config_ranges_are_checked() {
    let cases: &[(Config, Result<(), ConfigError>)] = &[
        (PLAIN, Ok(())),
        (Config::default(), Ok(())),
        (
            Config {
                server_max_window_bits: 9,
                client_max_window_bits: 9,
                compression_level: 1,
                memory_level: 1,
                ..PLAIN
            },
            Ok(()),
        ),
        (
            Config {
                server_max_window_bits: 8,
                ..PLAIN
            },
            Err(ConfigError::ServerMaxWindowBits),
        ),
        (
            Config {
                server_max_window_bits: 16,
                ..PLAIN
            },
            Err(ConfigError::ServerMaxWindowBits),
        ),
        (
            Config {
                client_max_window_bits: 8,
                ..PLAIN
            },
            Err(ConfigError::ClientMaxWindowBits),
        ),
        (
            Config {
                compression_level: 0,
                ..PLAIN
            },
            Err(ConfigError::CompressionLevel),
        ),
        (
            Config {
                compression_level: 10,
                ..PLAIN
            },
            Err(ConfigError::CompressionLevel),
        ),
        (
            Config {
                memory_level: 0,
                ..PLAIN
            },
            Err(ConfigError::MemoryLevel),
        ),
        (
            Config {
                memory_level: 10,
                ..PLAIN
            },
            Err(ConfigError::MemoryLevel),
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(config.check(), *expected, "{config:?}");
    }
}

#[test]
#[should_panic(expected = "unchecked ws_deflate::Config")]
fn negotiate_refuses_an_unchecked_config() {
    let config = Config {
        memory_level: 0,
        ..PLAIN
    };
    let _ = negotiate(&config, [b"permessage-deflate".as_slice()]);
}
