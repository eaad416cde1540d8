//! Secrets are wiped before their memory is freed. A global allocator looks into every block
//! this test binary frees (and every block a reallocation leaves behind) for the AccessKey
//! secret and the STS token; the paths that read, hold and sign with them are run, and no freed
//! block may still hold either value. What the HTTP stack does with the bytes it sends is
//! outside this test (the body is handed over as bytes that are wiped when released).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::TimeZone;
use ecs_renewd::cloud::credentials::{
    Credentials, CredentialsConfig, Environment, SourceKind, resolve,
};
use ecs_renewd::cloud::{form_body, signed_parameters};
use ecs_wire::Action;
use ecs_wire::secret::{Secret, read_secret_file};
use ecs_wire::signer;

/// Unreserved characters only, so the percent-encoded forms (the form body, the string to
/// sign) spell them the same way.
const SECRET: &str = "wipeTestSecret0123456789abcdefABCDEF";
const TOKEN: &str = "wipeTestToken9876543210zyxwvuZYXWVU";

struct Scanning;

static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicUsize = AtomicUsize::new(0);
static NEEDLES: OnceLock<[&'static [u8]; 2]> = OnceLock::new();

fn holds_a_needle(block: &[u8]) -> bool {
    NEEDLES.get().is_some_and(|needles| {
        needles
            .iter()
            .any(|n| block.len() >= n.len() && block.windows(n.len()).any(|w| w == *n))
    })
}

unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) {
            // SAFETY: the block is still ours until System.dealloc below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_a_needle(block) {
                HITS.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Through alloc + copy + dealloc, so the block left behind is looked at too.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Scanning = Scanning;

/// One test at a time: the counter is global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `body` with the scan armed and returns how many freed blocks held a secret.
fn freed_blocks_holding_secrets(body: impl FnOnce()) -> usize {
    NEEDLES.get_or_init(|| [SECRET.as_bytes(), TOKEN.as_bytes()]);
    HITS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    body();
    ARMED.store(false, Ordering::SeqCst);
    HITS.load(Ordering::SeqCst)
}

fn private_file(dir: &std::path::Path, name: &str, value: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn credentials() -> Credentials {
    Credentials {
        access_key_id: "LTAIwipe".into(),
        access_key_secret: Secret::new(SECRET),
        security_token: Some(Secret::new(TOKEN)),
        expiration: None,
    }
}

#[test]
fn no_freed_block_still_holds_a_secret_or_token() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let secret_file = private_file(dir.path(), "secret", &format!("{SECRET}\n"));
    let token_file = private_file(dir.path(), "token", &format!("  {TOKEN}\n\n"));
    let profile = private_file(
        dir.path(),
        "config.json",
        &format!(
            r#"{{"current":"sts","profiles":[{{"name":"sts","mode":"StsToken","access_key_id":"LTAIcli","access_key_secret":"{SECRET}","sts_token":"{TOKEN}"}}]}}"#
        ),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = chrono::Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap();

    let mut leaks = Vec::new();
    let mut check = |path: &str, body: &mut dyn FnMut()| {
        let hits = freed_blocks_holding_secrets(body);
        if hits > 0 {
            leaks.push(format!("{path}: {hits} freed block(s) held a secret"));
        }
    };

    check("reading a secret file", &mut || {
        let secret = read_secret_file(&secret_file, "AccessKey secret", None).unwrap();
        let token = read_secret_file(&token_file, "security token", None).unwrap();
        assert_eq!((secret.expose(), token.expose()), (SECRET, TOKEN));
    });
    check("the file source", &mut || {
        let config = CredentialsConfig {
            source: SourceKind::File,
            access_key_id: Some("LTAIfile".into()),
            access_key_secret_file: Some(secret_file.clone()),
            security_token_file: Some(token_file.clone()),
            ..CredentialsConfig::default()
        };
        let provider = runtime
            .block_on(resolve(&config, &Environment::default()))
            .unwrap();
        let held = runtime.block_on(provider.credentials(now)).unwrap();
        assert_eq!(held.access_key_secret.expose(), SECRET);
    });
    check("the aliyun CLI profile", &mut || {
        let config = CredentialsConfig {
            source: SourceKind::CliProfile,
            cli_config_path: Some(profile.clone()),
            ..CredentialsConfig::default()
        };
        let provider = runtime
            .block_on(resolve(&config, &Environment::default()))
            .unwrap();
        let held = runtime.block_on(provider.credentials(now)).unwrap();
        assert_eq!(held.security_token.unwrap().expose(), TOKEN);
    });
    check("the environment", &mut || {
        let env = Environment::from_pairs([
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN),
        ]);
        let config = CredentialsConfig {
            source: SourceKind::Env,
            ..CredentialsConfig::default()
        };
        let provider = runtime.block_on(resolve(&config, &env)).unwrap();
        assert_eq!(provider.fixed_key_id(), Some("LTAIenv"));
        assert!(!format!("{env:?}").contains(SECRET));
    });
    check("signing", &mut || {
        let signed = signer::sign(
            "POST",
            [("SecurityToken", TOKEN), ("Action", "RenewInstance")],
            &Secret::new(SECRET),
        );
        assert!(signed.string_to_sign.contains(TOKEN));
        assert!(!format!("{signed:?}").contains(TOKEN));
    });
    check("a signed request and its form body", &mut || {
        let params = [("InstanceId", "i-wipe".to_owned())];
        let signed = signed_parameters(
            Action::RenewInstance,
            "cn-hangzhou",
            &params,
            &credentials(),
            "nonce",
            now,
        );
        let body = form_body(&signed);
        let sent = body.clone();
        assert!(sent.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    });
    assert!(leaks.is_empty(), "{leaks:#?}");

    // The scan itself finds what is not wiped.
    let found = freed_blocks_holding_secrets(|| {
        let plain = format!("{TOKEN}!");
        drop(plain);
    });
    assert!(found >= 1, "the allocator's scan missed an unwiped token");
}
