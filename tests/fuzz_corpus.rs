//! Replays the fuzz corpus (docs/fuzzing.md) through the fuzz harnesses of src/fuzz.rs,
//! the same functions libFuzzer runs: every file under `fuzz/corpus/<target>/` (the seeds
//! and minimised interesting inputs) and `fuzz/regressions/<target>/` (every crash ever
//! found, minimised). A regression fails `cargo test`.
//!
//! `seed_corpus` (ignored) writes the seeds captured from the in-process test upstream
//! and the test PKI; `fuzz/seeds-unbound.sh` adds answers captured from a real unbound.

mod common;

use std::path::{Path, PathBuf};

use stubborn::fuzz::TARGETS;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries.map(|e| e.expect("a directory entry").path()).collect();
    out.sort();
    out
}

#[test]
fn every_saved_input_passes_its_target() {
    let mut failed = Vec::new();
    for (target, run) in TARGETS {
        let seeds = files(&repo().join("fuzz/corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for {target} in fuzz/corpus/{target}");
        let regressions = files(&repo().join("fuzz/regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a corpus file");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "inputs that fail their target: {failed:#?}");
}

/// Writes the seed corpus of every target from the test upstream's answer table and the
/// test PKI: `cargo test --test fuzz_corpus -- --ignored seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the seeds change"]
fn seed_corpus() {
    use common::dns::{QueryOptions, build_query, respond};
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::{Name, RecordType};

    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = repo().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };

    let names = ["a.test", "A.Test", "multi.test", "big.test", "txt.test", "ttl0.test", "servfail.test"];
    let more = ["nx.test", "n1.a.test", "_dns.resolver.arpa", "xn--bcher-kva.example", "x.y.z.w.v.u.t.test"];
    let types = [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::SOA, RecordType::ANY];
    let options = [
        ("edns", QueryOptions::default()),
        ("plain", QueryOptions { edns: false, dnssec_ok: false, recursion_desired: true }),
        ("do", QueryOptions { edns: true, dnssec_ok: true, recursion_desired: false }),
    ];
    let mut answers = Vec::new();
    let mut id = 1u16;
    for name in names.iter().chain(&more) {
        for rtype in types {
            for (label, opts) in &options {
                id += 1;
                let query = build_query(id, name, rtype, opts);
                let file = format!("{name}-{rtype}-{label}");
                // Fewer client seeds than answers: the question layout varies little.
                if rtype == RecordType::A || *label == "edns" {
                    write("client_query", &file, &query);
                }
                if let Some(answer) = respond(&query) {
                    write("upstream_answer", &file, &answer);
                    answers.push(answer);
                }
            }
        }
    }
    // Client queries the front end answers itself, or refuses.
    let edit = |f: &dyn Fn(&mut Message)| {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii("Ex.Test.").unwrap(), RecordType::A));
        m.set_edns(Edns::new());
        f(&mut m);
        m.to_vec().unwrap()
    };
    write("client_query", "notify", &edit(&|m| m.metadata.op_code = OpCode::Notify));
    write(
        "client_query",
        "edns-v1",
        &edit(&|m| {
            m.edns.as_mut().unwrap().set_version(1);
        }),
    );
    write(
        "client_query",
        "two-questions",
        &edit(&|m| {
            let q = m.queries[0].clone();
            m.add_query(q);
        }),
    );
    write("client_query", "response", &edit(&|m| m.metadata.message_type = MessageType::Response));
    write(
        "client_query",
        "bypass-cache",
        &edit(&|m| {
            m.edns.as_mut().unwrap().options_mut().insert(EdnsOption::Unknown(65_053, vec![]));
        }),
    );
    write(
        "client_query",
        "ecs",
        &edit(&|m| {
            let ecs = vec![0, 1, 24, 0, 192, 0, 2];
            m.edns.as_mut().unwrap().options_mut().insert(EdnsOption::Unknown(8, ecs));
        }),
    );
    let mut cut = edit(&|_| {});
    cut.truncate(cut.len() - 3);
    write("client_query", "cut", &cut);

    // DoT streams: a split seed octet, then two or three framed answers (the last one
    // sometimes cut short).
    for (i, window) in answers.windows(3).step_by(7).enumerate() {
        let mut stream = vec![i as u8];
        for answer in window {
            stream.extend_from_slice(&(answer.len() as u16).to_be_bytes());
            stream.extend_from_slice(answer);
        }
        if i % 3 == 2 {
            stream.truncate(stream.len() - 5);
        }
        write("dot_framing", &format!("stream-{i}"), &stream);
    }

    // DoH responses: status/content-type selector, Age, question selector, then an answer
    // under ID 0 (RFC 8484 §4.1). 200 of the DNS type mostly; some with an Age, some
    // checked against another question, some refused heads.
    for (i, answer) in answers.iter().step_by(6).enumerate() {
        let selector = [0x00u8, 0x10, 0x08, 0x20][i % 4];
        let age: u32 = if i % 3 == 1 { 100 } else { 0 };
        let mut data = vec![selector];
        data.extend_from_slice(&age.to_be_bytes());
        data.push((i % 5 == 4) as u8);
        let mut body = answer.clone();
        body[..2].copy_from_slice(&[0, 0]);
        data.extend_from_slice(&body);
        write("doh_answer", &format!("response-{i}"), &data);
    }

    // Chains: selector (pinned certificate index, bit 3: by whole DER; 7: unrelated),
    // then each DER with a 2-octet length.
    for (kind, label) in
        [(common::ChainKind::SelfSigned, "self"), (common::ChainKind::WithIntermediate, "inter")]
    {
        let pki = common::pki::generate(kind, "dot.test");
        for selector in [0u8, 8, 1, 9, 7] {
            let mut data = vec![selector];
            for der in &pki.chain {
                data.extend_from_slice(&(der.len() as u16).to_be_bytes());
                data.extend_from_slice(der);
            }
            write("pin_chain", &format!("{label}-{selector}"), &data);
        }
    }

    // Configurations: the repository's, and a few small ones that fail validation.
    for file in files(&repo().join("config")) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        write("config", &name, &std::fs::read(&file).unwrap());
    }
    let small = [
        (
            "pinned.toml",
            "[[upstream]]\naddress = \"127.0.0.1\"\npins = [\"key-fp:SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"]\n",
        ),
        ("bad-pin.toml", "[[upstream]]\naddress = \"127.0.0.1\"\npins = [\"key-fp:SHA256:nope\"]\n"),
        ("no-upstream.toml", "[server]\nlisten = [\"127.0.0.1:53\"]\n"),
        ("bad-type.toml", "[cache]\nmax_entries = \"many\"\n"),
    ];
    for (name, text) in small {
        write("config", name, text.as_bytes());
    }
}
