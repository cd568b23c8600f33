//! The k3s test double (tests/doubles/k3s) as an air-gap bundle, for the tests that run the
//! cluster phase on lab hosts without k3s (none can be had here).

use std::path::Path;

use sha2::{Digest, Sha256};

/// The k3s release the double says it is.
pub const VERSION: &str = "v1.35.6+k3s1";

pub fn hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A bundle whose k3s binary is the test double, with Flux's install manifest (an excerpt
/// made for the tests) as its GitOps part.
pub fn double_bundle(dir: &Path) {
    double_bundle_for(dir, "flux", "2.4.0")
}

/// [`double_bundle`] with another engine's install manifest: `flux` 2.4.0 or `argocd` 3.2.0,
/// the excerpts in tests/fixtures/handoff/.
pub fn double_bundle_for(dir: &Path, engine: &str, version: &str) {
    let k = dir.join("k3s");
    std::fs::create_dir_all(&k).unwrap();
    std::fs::create_dir_all(dir.join("gitops")).unwrap();
    let binary = std::fs::read_to_string("tests/doubles/k3s").unwrap().replace("@VERSION@", VERSION);
    let images = b"k3s test double: no images".to_vec();
    let install = std::fs::read(format!("tests/fixtures/handoff/{engine}-install-excerpt.yaml")).unwrap();
    std::fs::write(k.join("k3s"), &binary).unwrap();
    std::fs::write(k.join("k3s-airgap-images-amd64.tar.zst"), &images).unwrap();
    let sums = format!("{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n", hex(binary.as_bytes()), hex(&images));
    std::fs::write(k.join("sha256sum-amd64.txt"), &sums).unwrap();
    let install_path = format!("gitops/{engine}-install.yaml");
    std::fs::write(dir.join(&install_path), &install).unwrap();
    let entry = |path: &str, what: &str, bytes: &[u8]| {
        serde_json::json!({"path": path, "what": what, "version": VERSION, "source": "k3s test double",
                           "sha256": hex(bytes), "size": bytes.len()})
    };
    let manifest = serde_json::json!({
        "format": 1, "arch": "amd64", "k3s": {"version": VERSION},
        "gitops": {"engine": engine, "version": version, "images": []},
        "files": [entry("k3s/k3s", "k3s binary (test double)", binary.as_bytes()),
                  entry("k3s/k3s-airgap-images-amd64.tar.zst", "air-gap images", &images),
                  entry("k3s/sha256sum-amd64.txt", "sha256 list", sums.as_bytes()),
                  entry(&install_path, &format!("{engine} install manifest"), &install)],
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}
