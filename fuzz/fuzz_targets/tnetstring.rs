//! Parses arbitrary bytes as a tnetstring and walks every value in the result; whatever
//! parses must re-encode canonically into something that parses to the same value, and the
//! canonical form must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::proto::tnetstring::{parse, Value, Writer, DEPTH_MAX};

/// Re-encodes `value`; the recursion is bounded by DEPTH_MAX because `parse` checked it.
fn encode(writer: &mut Writer<'_>, value: Value<'_>, depth: usize) {
    assert!(depth <= DEPTH_MAX);
    match value {
        Value::Bytes(bytes) => writer.bytes(bytes),
        Value::Int(int) => writer.int(int),
        Value::Bool(flag) => writer.bool(flag),
        Value::Null => writer.null(),
        Value::Float(float) => writer.float(float),
        Value::List(list) => {
            writer.begin_list();
            list.iter().for_each(|item| encode(writer, item, depth + 1));
            writer.end_list();
        }
        Value::Dict(dict) => {
            writer.begin_dict();
            for (key, item) in dict.iter() {
                writer.bytes(key);
                encode(writer, item, depth + 1);
            }
            writer.end_dict();
        }
    }
}

fn same(left: Value<'_>, right: Value<'_>) -> bool {
    match (left, right) {
        (Value::Float(left), Value::Float(right)) => {
            left == right || (left.is_nan() && right.is_nan())
        }
        (Value::List(left), Value::List(right)) => {
            left.iter().count() == right.iter().count()
                && left
                    .iter()
                    .zip(right.iter())
                    .all(|(left, right)| same(left, right))
        }
        (Value::Dict(left), Value::Dict(right)) => {
            left.iter().count() == right.iter().count()
                && left
                    .iter()
                    .zip(right.iter())
                    .all(|((left_key, left), (right_key, right))| {
                        left_key == right_key && same(left, right)
                    })
        }
        (left, right) => left == right,
    }
}

fn canonical(value: Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = Writer::new(&mut out);
    encode(&mut writer, value, 0);
    writer.finish();
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok((value, used)) = parse(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    let encoded = canonical(value);
    let (again, again_used) = parse(&encoded).expect("canonical encoding parses");
    assert_eq!(again_used, encoded.len());
    assert!(same(value, again), "value changed through re-encoding");
    assert_eq!(canonical(again), encoded, "canonical form is not stable");
});
