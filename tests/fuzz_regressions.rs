//! The fuzz targets' checks over committed inputs: the seeds in `fuzz/regressions/<target>/`
//! (each one an input that once found a bug, or a case worth keeping), plus a sweep of
//! hand-written tricky headers. `fuzz/README.md` says how to fuzz.

#[allow(dead_code)]
#[path = "../fuzz/harness.rs"]
mod harness;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        std::fs::read(entry.path()).expect("readable seed"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    seeds
}

const TRICKY_COOKIES: &[&[u8]] = &[
    b"",
    b"id",
    b"id=",
    b"id=;id=",
    b"id=a; id=b",
    b"id=a;id=a",
    b"id=\"quoted\"",
    b"id = spaced ; other=1",
    b";;;id=x;;;",
    b"=id; id==x",
    b"id=a=b",
    b"ID=upper",
    b"junk=\x80\x81; id=ok",
    b"id=\x80\x81",
    b"id=ba d",
];

#[test]
fn cookie_header_regressions() {
    for cookie in TRICKY_COOKIES {
        harness::cookie_header(cookie);
    }
    for (name, seed) in seeds("cookie_header") {
        println!("seed {name}");
        harness::cookie_header(&seed);
    }
}

#[test]
fn request_path_regressions() {
    for cookie in TRICKY_COOKIES {
        for set_cookie in [
            &b""[..],
            b"id=new; Path=/",
            b"id=; Max-Age=0",
            b"id=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            for path in ["", "login", "poll", "keepalive", "status", "x"] {
                let mut input = cookie.to_vec();
                input.push(0xFF);
                input.extend_from_slice(set_cookie);
                input.push(0xFF);
                input.extend_from_slice(path.as_bytes());
                harness::request_path(&input);
            }
        }
    }
    for (name, seed) in seeds("request_path") {
        println!("seed {name}");
        harness::request_path(&seed);
    }
}
