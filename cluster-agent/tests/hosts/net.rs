//! Test hosts: network namespaces on one bridge, each with its own address, and the faults a
//! network makes (a link down, packets dropped one or both ways).
//!
//! ```text
//!  switch namespace:  br0 ── v0 ── v1 ── v2 ...            (no other link: nothing leaves)
//!                            │     │     │
//!  host namespaces:        eth0  eth0  eth0  198.18.0.{10,11,12...}/24, MTU 1500
//! ```
//!
//! Every namespace is a private one (`unshare --net`) held by a small process of ours; the
//! namespace goes away with the last process in it, so killing the holders (and the processes
//! started on the hosts) removes everything, also when a test fails. The addresses are in
//! 198.18.0.0/15, the range set aside for network tests, and exist only inside the switch.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// A set of test hosts on one switch.
pub struct World {
    switch: Holder,
    pub hosts: Vec<Host>,
}

/// One test host: a network namespace with one link to the switch.
pub struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    holder: Holder,
    /// The switch side of this host's link.
    port: String,
}

/// The process that holds a namespace open; killed (and so the namespace freed) when dropped,
/// or when the test process dies (its stdin closes).
struct Holder {
    child: Child,
}

impl Holder {
    /// Starts a process in a new network namespace and waits until it is in it.
    fn start() -> Result<Holder, String> {
        let mut child = Command::new("/usr/bin/unshare")
            .args(["--net", "--", "/bin/sh", "-c", "echo ready; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot run unshare: {error}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .map_err(|error| error.to_string())?;
            return Err(format!(
                "unshare --net failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Holder { child })
    }

    /// The `/proc` path of the namespace.
    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.child.id())
    }

    /// Runs `sh -c script` inside the namespace.
    fn run(&self, script: &str) -> Result<(), String> {
        let output = Command::new("/usr/bin/nsenter")
            .arg(format!("--net={}", self.netns()))
            .args(["--", "/bin/sh", "-ec", script])
            .output()
            .map_err(|error| format!("cannot run nsenter: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{script}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// A command that runs `program` in `holder`'s namespace; it `exec`s, so the child's pid is the
/// program's, and the program gets SIGKILL if the test process dies.
fn command_in(holder: &Holder, program: &str) -> Command {
    let mut command = Command::new("/usr/bin/nsenter");
    command.arg(format!("--net={}", holder.netns())).args([
        "--",
        "/usr/bin/setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        program,
    ]);
    command
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_namespace(path: &str) {
    let namespace = std::fs::File::open(path).unwrap();
    nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|error| panic!("entering the network namespace {path}: {error}"));
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl World {
    /// Makes one host per name, addresses 198.18.0.10 upwards, all on one switch; fails with
    /// the reason when this machine cannot make network namespaces.
    pub fn create(names: &[&str]) -> Result<World, String> {
        for tool in ["/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/setpriv"] {
            if !std::path::Path::new(tool).exists() {
                return Err(format!("{tool} is missing (util-linux)"));
            }
        }
        let switch = Holder::start()?;
        switch.run("ip link set lo up; ip link add br0 type bridge; ip link set br0 up")?;
        let mut hosts = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let holder = Holder::start()?;
            let ip = Ipv4Addr::new(198, 18, 0, 10 + index as u8);
            let port = format!("v{index}");
            switch.run(&format!(
                "ip link add {port} mtu 1500 type veth peer name eth0 mtu 1500 netns {pid}; \
                 ip link set {port} master br0 up",
                pid = holder.child.id()
            ))?;
            holder.run(&format!(
                "ip link set lo up; ip addr add {ip}/24 dev eth0; ip link set eth0 up"
            ))?;
            hosts.push(Host {
                name: name.to_string(),
                ip,
                holder,
                port,
            });
        }
        let world = World { switch, hosts };
        world.require_iptables()?;
        Ok(world)
    }

    /// The host called `name`.
    /// The hosts `names` for a test; None (the test is skipped, saying why) where this machine
    /// cannot make network namespaces, unless `CI` is set: there a skip is a failure.
    pub fn for_test(names: &[&str]) -> Option<World> {
        match World::create(names) {
            Ok(world) => Some(world),
            Err(why) => {
                let on_ci =
                    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "0");
                assert!(!on_ci, "test hosts are required under CI: {why}");
                eprintln!("SKIPPED: this machine cannot make test hosts: {why}");
                None
            }
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn require_iptables(&self) -> Result<(), String> {
        self.hosts[0]
            .holder
            .run("iptables -S >/dev/null")
            .map_err(|error| format!("iptables does not work here: {error}"))
    }

    /// Runs `program` in the switch's namespace (where every host's link ends), killed with
    /// the test process.
    pub fn switch_command(&self, program: &str) -> Command {
        command_in(&self.switch, program)
    }

    /// Takes a host's link down (`up = false`) or up again, at the switch.
    pub fn set_link(&self, host: &Host, up: bool) {
        let state = if up { "up" } else { "down" };
        self.switch
            .run(&format!("ip link set {} {state}", host.port))
            .unwrap();
    }
}

impl Host {
    /// A command that runs `program` on this host; it `exec`s, so the child's pid is the
    /// program's, and the program gets SIGKILL if the test process dies.
    pub fn command(&self, program: &str) -> Command {
        command_in(&self.holder, program)
    }

    /// Enters this host's network namespace on the calling thread: sockets it opens from now
    /// on are this host's.
    pub fn enter(&self) {
        enter_namespace(&self.namespace_path());
    }

    /// The `/proc` path of this host's network namespace.
    pub fn namespace_path(&self) -> String {
        self.holder.netns()
    }

    /// Drops every packet in and out of this host's link (its link stays up).
    pub fn drop_all(&self) {
        self.iptables("-I INPUT -i eth0 -j DROP; iptables -I OUTPUT -o eth0 -j DROP");
    }

    /// Drops every packet that reaches this host; what it sends (its gossip among it) still
    /// leaves: peers hear from it but cannot reach it.
    pub fn drop_inbound(&self) {
        self.iptables("-I INPUT -i eth0 -j DROP");
    }

    /// Drops every packet this host sends to `peer` (one way: `peer` still reaches this host).
    pub fn drop_outbound_to(&self, peer: Ipv4Addr) {
        self.iptables(&format!("-I OUTPUT -o eth0 -d {peer} -j DROP"));
    }

    /// Removes every packet filter of this host.
    pub fn heal(&self) {
        self.iptables("-F");
    }

    fn iptables(&self, rules: &str) {
        self.holder.run(&format!("iptables {rules}")).unwrap();
    }
}
