//! The event contract through the real writer: every kind of bad input lands in `rejected`
//! with its original bytes and a reason naming the field; good input round-trips.

use ingest::writer::{LakeWriter, Outcome, WriterOptions};
use lake::tables::Lake;
use spacepulse_tests::{query, session};

const NOW_MS: i64 = 1_430_150_400_000; // the "ingest clock" for these messages: 2015-04-27T16:00:00Z

fn ok_event(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e","ts":1430150400000,"user_id":1,"type":"like","platform":"ios"{extra}}}"#
    )
}

/// (message, field named in the reason or "message", a piece of the reason)
fn bad_messages() -> Vec<(Vec<u8>, &'static str, &'static str)> {
    let mut big = ok_event(r#","props":{"pad":""#).into_bytes();
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b'x', (1 << 20) + 10));
    big.extend_from_slice(b"\"}}");
    vec![
        (b"\xff\xfe{\"event_id\":1}".to_vec(), "message", "not valid UTF-8"),
        (b"{not json".to_vec(), "message", "not valid JSON"),
        (b"[1,2]".to_vec(), "message", "expected a JSON object"),
        (br#"{"ts":1430150400000,"user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "event_id", "required field is missing"),
        (format!(r#"{{"event_id":"{}","ts":1430150400000,"user_id":1,"type":"like","platform":"ios"}}"#, "x".repeat(65)).into_bytes(), "event_id", "must be 1 to 64 bytes"),
        (br#"{"event_id":7,"ts":1430150400000,"user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "event_id", "expected a string"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":"abc","type":"like","platform":"ios"}"#.to_vec(), "user_id", r#"expected an unsigned integer (number or decimal string), got "abc""#),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":-5,"type":"like","platform":"ios"}"#.to_vec(), "user_id", "got -5"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1.5,"type":"like","platform":"ios"}"#.to_vec(), "user_id", "got 1.5"),
        (br#"{"event_id":"e","ts":1430150400000,"type":"like","platform":"ios"}"#.to_vec(), "user_id", "required field is missing"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"type":"like","platform":"symbian"}"#.to_vec(), "platform", "unknown platform \"symbian\""),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"type":"Photo-Upload","platform":"ios"}"#.to_vec(), "type", "does not match"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"platform":"ios"}"#.to_vec(), "type", "required field is missing"),
        (br#"{"event_id":"e","ts":946684799999,"user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "ts", "before 2000-01-01"),
        (br#"{"event_id":"e","ts":1430240400001,"user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "ts", "more than 24 h ahead"),
        (br#"{"event_id":"e","ts":"yesterday","user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "ts", "expected RFC 3339"),
        (br#"{"event_id":"e","ts":"2015-04-28T10:00:00","user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "ts", "expected RFC 3339 with an offset"),
        (br#"{"event_id":"e","ts":true,"user_id":1,"type":"like","platform":"ios"}"#.to_vec(), "ts", "expected integer epoch milliseconds"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"type":"follow","platform":"ios"}"#.to_vec(), "account_id", "required for type follow"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"type":"reserve","platform":"ios"}"#.to_vec(), "campaign_id", "required for type reserve"),
        (br#"{"event_id":"e","ts":1430150400000,"user_id":1,"type":"ad_click","platform":"ios","advertiser_id":"a"}"#.to_vec(), "ad_id", "required for type ad_click"),
        (ok_event(r#","photos":-1"#).into_bytes(), "photos", "expected an unsigned integer"),
        (ok_event(r#","photos":5000000000"#).into_bytes(), "photos", "out of range"),
        (ok_event(r#","amount_cents":"12""#).into_bytes(), "amount_cents", "expected a signed 64-bit integer"),
        (ok_event(r#","props":[1]"#).into_bytes(), "props", "expected a JSON object"),
        (ok_event(r#","region":5"#).into_bytes(), "region", "expected a string"),
        (big, "message", "larger than the 1 MiB limit"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_rejected_with_its_reason_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
    let mut writer = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    writer.resume_at("events", 0).await.unwrap();
    let bad = bad_messages();
    for (i, (msg, field, _)) in bad.iter().enumerate() {
        let outcome = writer.push("events", 0, i as i64, msg, NOW_MS).unwrap();
        match outcome {
            Outcome::Rejected(r) => {
                assert_eq!(r.field.unwrap_or("message"), *field, "message {i}: {r}")
            }
            other => panic!("message {i} was not rejected: {other:?}"),
        }
    }
    // One good message after them: the ingest goes on.
    assert_eq!(
        writer
            .push(
                "events",
                0,
                bad.len() as i64,
                ok_event("").as_bytes(),
                NOW_MS
            )
            .unwrap(),
        Outcome::Accepted
    );
    assert_eq!(writer.stats.rejected, bad.len() as u64);
    writer.flush().await.unwrap();

    let ctx = session(dir.path()).await;
    let rows = query(&ctx, "SELECT source_offset, reason, field, raw_bytes, length(encode(raw, 'hex')) / 2 AS stored, encode(raw, 'hex') AS hex FROM rejected ORDER BY source_offset").await;
    assert_eq!(rows.len(), bad.len());
    for (i, ((msg, field, reason), row)) in bad.iter().zip(&rows).enumerate() {
        assert_eq!(row["source_offset"].as_i64(), Some(i as i64));
        let got = row["reason"].as_str().unwrap();
        assert!(
            got.starts_with(&format!("{field}: ")),
            "message {i}: reason {got:?} does not name {field}"
        );
        assert!(
            got.contains(reason),
            "message {i}: reason {got:?} lacks {reason:?}"
        );
        let stored_field = row
            .get("field")
            .and_then(|f| f.as_str())
            .unwrap_or("message");
        assert_eq!(stored_field, *field);
        assert_eq!(row["raw_bytes"].as_i64(), Some(msg.len() as i64));
        let kept = msg.len().min(1 << 20);
        assert_eq!(
            row["stored"].as_i64(),
            Some(kept as i64),
            "message {i}: stored bytes"
        );
        if kept < 4096 {
            let hex: String = msg.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                row["hex"].as_str(),
                Some(hex.as_str()),
                "message {i}: original bytes"
            );
        }
    }
    let accepted = query(&ctx, "SELECT count(*) AS n FROM events").await;
    assert_eq!(accepted[0]["n"].as_i64(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_input_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
    let mut writer = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    writer.resume_at("t", 3).await.unwrap();
    let messages = [
        // epoch ms and a numeric user id; photos defaults to 1 for photo_upload
        r#"{"event_id":"a","ts":1430150399999,"user_id":42,"type":"photo_upload","platform":"android"}"#,
        // RFC 3339 with a +08:00 offset (= 2015-04-27T16:00:00.500Z) and a string user id
        r#"{"event_id":"b","ts":"2015-04-28T00:00:00.500+08:00","user_id":"18446744073709551615","type":"reserve","platform":"ios","campaign_id":"redmi-launch","region":"11","props":{"k":[1,2],"s":"\u00e9"}}"#,
        r#"{"event_id":"c\u00e9","ts":"2015-04-27T16:59:59Z","user_id":7,"type":"ad_conversion","platform":"web","advertiser_id":"adv","ad_id":"ad9","amount_cents":-250,"photos":3,"future_field":true}"#,
        r#"{"event_id":"d","ts":1430150400000,"user_id":8,"type":"custom_kind_2","platform":"other","account_id":null}"#,
    ];
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            writer
                .push("t", 3, 100 + i as i64, m.as_bytes(), NOW_MS)
                .unwrap(),
            Outcome::Accepted,
            "{m}"
        );
    }
    writer.flush().await.unwrap();
    let ctx = session(dir.path()).await;
    let rows = query(
        &ctx,
        "SELECT event_id, CAST(ts AS BIGINT) / 1000 AS ms, user_id, CAST(user_id AS DECIMAL(20,0)) AS u, type, platform, \
         account_id, campaign_id, advertiser_id, ad_id, photos, amount_cents, region, props, source, source_partition, source_offset, date, hour \
         FROM events ORDER BY source_offset",
    )
    .await;
    assert_eq!(rows.len(), 4);
    let r = &rows[0];
    assert_eq!(
        (
            r["event_id"].as_str(),
            r["ms"].as_i64(),
            r["user_id"].as_i64()
        ),
        (Some("a"), Some(1_430_150_399_999), Some(42))
    );
    assert_eq!(
        (r["photos"].as_i64(), r["date"].as_str(), r["hour"].as_i64()),
        (Some(1), Some("2015-04-27"), Some(15))
    );
    assert_eq!(
        (
            r["source"].as_str(),
            r["source_partition"].as_i64(),
            r["source_offset"].as_i64()
        ),
        (Some("t"), Some(3), Some(100))
    );
    let r = &rows[1];
    assert_eq!(r["ms"].as_i64(), Some(1_430_150_400_500));
    // u64::MAX is stored bit for bit in the signed column.
    assert_eq!(r["user_id"].as_i64(), Some(-1));
    assert_eq!(
        (r["campaign_id"].as_str(), r["region"].as_str()),
        (Some("redmi-launch"), Some("11"))
    );
    let props: serde_json::Value = serde_json::from_str(r["props"].as_str().unwrap()).unwrap();
    assert_eq!(props, serde_json::json!({"k": [1, 2], "s": "é"}));
    assert_eq!(
        (r["date"].as_str(), r["hour"].as_i64()),
        (Some("2015-04-27"), Some(16))
    );
    let r = &rows[2];
    assert_eq!(r["event_id"].as_str(), Some("cé"));
    assert_eq!(r["ms"].as_i64(), Some(1_430_153_999_000));
    assert_eq!(
        (
            r["advertiser_id"].as_str(),
            r["ad_id"].as_str(),
            r["amount_cents"].as_i64(),
            r["photos"].as_i64()
        ),
        (Some("adv"), Some("ad9"), Some(-250), Some(3))
    );
    let r = &rows[3];
    assert_eq!(
        (r["type"].as_str(), r["platform"].as_str()),
        (Some("custom_kind_2"), Some("other"))
    );
    assert!(r.get("account_id").is_none_or(|v| v.is_null()));
    assert!(r.get("photos").is_none_or(|v| v.is_null()));
}
