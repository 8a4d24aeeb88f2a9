//! `rvs`: the daemon (`rvs run`), its administration (`rvs adm`, ipvsadm
//! syntax), and `rvs lab`, which shows the load balancer at work in
//! network namespaces it builds and removes itself.

mod cli;
mod daemon;
mod driver;
mod health;
mod lab;
mod log;
mod os;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::main(&args));
}
