fn main() {
    std::process::exit(groundwork::cli::main());
}
