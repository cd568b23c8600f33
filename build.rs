//! The role folders are embedded in the binary (`include_dir!`), which cannot tell cargo about
//! files added later: this makes any change under playbooks/ (a new template too) rebuild.
fn main() {
    println!("cargo:rerun-if-changed=playbooks");
}
