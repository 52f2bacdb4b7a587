#!/usr/bin/env bash
# A real single-node Slurm cluster behind a real OpenSSH server on 127.0.0.1, for tests.
#
#   scripts/test-cluster.sh install            Debian packages (idempotent; needs root)
#   scripts/test-cluster.sh up STATE_DIR       start munged, slurmctld, slurmd, sshd
#   scripts/test-cluster.sh down STATE_DIR     stop exactly what `up` started, by PID
#   scripts/test-cluster.sh status STATE_DIR
#
# Everything lives in STATE_DIR: keys, configuration, spool, logs, PID files. `up` writes
# STATE_DIR/env with the variables the tests read (HQS_TEST_SSH_*, SLURM_CONF). The daemons
# run as root (a test machine); only loopback addresses are used.
set -euo pipefail

NAME=test-cluster
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A password-only user for the interactive-login test; `up` sets a new random password
# (which also unlocks it) and `down` locks it again, so it is never a way in outside a test run.
PW_USER=hqs-sdk-pw-test

cmd_install() {
    local missing=()
    for bin in slurmctld slurmd sbatch munged sshd ssh-keygen; do
        command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge openssh-server openssh-client \
        >/dev/null
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_up() {
    local state=$1
    [ -n "$state" ] || die "usage: $0 up STATE_DIR"
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    cmd_down "$state" >/dev/null 2>&1 || true
    mkdir -p "$state"/{ctld,spool,munge,ssh,io}
    chmod 700 "$state/munge"
    local node
    node=$(hostname -s)
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))

    # munge: its own key and socket, so it never touches a system munged.
    [ -f "$state/munge/munge.key" ] || dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 2>/dev/null
    chmod 400 "$state/munge/munge.key"
    /usr/sbin/munged --force --socket="$state/munge/munge.sock" --key-file="$state/munge/munge.key" \
        --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" \
        --seed-file="$state/munge/munged.seed" \
        || die "munged did not start; see $state/munge/munged.log"
    wait_for 10 "munged is up" test -S "$state/munge/munge.sock" || die "munged socket missing"

    local ctld_port slurmd_port
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    cat > "$state/slurm.conf" <<EOF
ClusterName=hqstest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# Memory is sampled every second and a job over its --mem is killed (Slurm's own OOM path).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
# Jobs in 'urgent' cancel jobs in 'debug' that stand in their way (the preemption path).
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
AccountingStorageType=accounting_storage/none
MinJobAge=300
# Without a default, a job that gives no --mem is allotted the whole node.
DefMemPerCPU=256
KillWait=5
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=1
PartitionName=urgent Nodes=$node MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=2
EOF
    export SLURM_CONF="$state/slurm.conf"
    /usr/sbin/slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start; see $state/slurmctld.log"
    wait_for 30 "slurmctld answers" scontrol ping || die "slurmctld does not answer; see $state/slurmctld.log"
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$node" || die "slurmd did not start; see $state/slurmd.log"
    wait_for 60 "node $node is idle" sh -c "sinfo -h -n $node -o %t | grep -qx idle" \
        || die "node $node never became idle; see $state/slurmd.log and $state/slurmctld.log"

    # sshd on a free loopback port with its own host key, client key and known_hosts.
    local ssh_port
    ssh_port=$(free_port)
    mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$state/ssh/host_key" <<<y >/dev/null 2>&1
    ssh-keygen -q -t ed25519 -N '' -f "$state/ssh/client_key" <<<y >/dev/null 2>&1
    cp "$state/ssh/client_key.pub" "$state/ssh/authorized_keys"
    echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$state/ssh/host_key.pub")" > "$state/ssh/known_hosts"
    local password
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    id "$PW_USER" >/dev/null 2>&1 || useradd --no-create-home --shell /bin/sh "$PW_USER" \
        || die "cannot create the test user $PW_USER"
    echo "$PW_USER:$password" | chpasswd || die "cannot set the password of $PW_USER"
    cat > "$state/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $state/ssh/host_key
PidFile $state/ssh/sshd.pid
AuthorizedKeysFile $state/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxSessions 50
MaxStartups 50:30:100
SetEnv SLURM_CONF=$state/slurm.conf
Subsystem sftp internal-sftp
# A user that logs in with a password only, for the interactive login test.
Match User $PW_USER
    PasswordAuthentication yes
    PubkeyAuthentication no
EOF
    /usr/sbin/sshd -f "$state/ssh/sshd_config" -E "$state/ssh/sshd.log" \
        || die "sshd did not start; see $state/ssh/sshd.log"
    cat > "$state/ssh/ssh_config" <<EOF
Host hqs-test-cluster
    HostName 127.0.0.1
    Port $ssh_port
    User root
    IdentityFile $state/ssh/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $state/ssh/known_hosts
    StrictHostKeyChecking yes
EOF
    cat > "$state/env" <<EOF
HQS_TEST_SSH_HOST=127.0.0.1
HQS_TEST_SSH_PORT=$ssh_port
HQS_TEST_SSH_USER=root
HQS_TEST_SSH_PASSWORD_USER=$PW_USER
HQS_TEST_SSH_PASSWORD=$password
HQS_TEST_SSH_KEY=$state/ssh/client_key
HQS_TEST_SSH_KNOWN_HOSTS=$state/ssh/known_hosts
HQS_TEST_SSH_CONFIG=$state/ssh/ssh_config
HQS_TEST_SLURM_IO=$state/io
SLURM_CONF=$state/slurm.conf
HQS_TEST_SLURM_STATE=$state
EOF
    # End to end: a job submitted over SSH runs and finishes.
    wait_for 10 "sshd accepts the test key" \
        ssh -F "$state/ssh/ssh_config" -o BatchMode=yes hqs-test-cluster true \
        || die "cannot log in over SSH; see $state/ssh/sshd.log"
    local job
    job=$(ssh -F "$state/ssh/ssh_config" -o BatchMode=yes hqs-test-cluster \
        "sbatch --parsable --chdir=$state/io --output=$state/io/smoke.out --wrap='echo smoke-ok'") \
        || die "sbatch over SSH failed"
    wait_for 60 "smoke job $job ran" grep -q smoke-ok "$state/io/smoke.out" \
        || die "smoke job $job did not run; see $state/slurmd.log"
    echo "test-cluster: up; source $state/env" >&2
}

stop_pidfile() {
    local file=$1 name=$2
    pid_alive "$file" || return 0
    local pid
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    echo "test-cluster: stopped $name ($pid)" >&2
}

cmd_down() {
    local state=$1
    [ -n "$state" ] || die "usage: $0 down STATE_DIR"
    [ -d "$state" ] || return 0
    if [ -f "$state/slurm.conf" ] && pid_alive "$state/slurmctld.pid"; then
        # Jobs first, so their steps end with the daemons that own them.
        SLURM_CONF="$state/slurm.conf" timeout 10 scancel --user=root 2>/dev/null || true
    fi
    stop_pidfile "$state/ssh/sshd.pid" sshd
    stop_pidfile "$state/slurmd.pid" slurmd
    stop_pidfile "$state/slurmctld.pid" slurmctld
    stop_pidfile "$state/munge/munged.pid" munged
    if id "$PW_USER" >/dev/null 2>&1; then usermod --lock "$PW_USER" 2>/dev/null || true; fi
}

cmd_status() {
    local state=$1
    for entry in "ssh/sshd.pid:sshd" "slurmd.pid:slurmd" "slurmctld.pid:slurmctld" "munge/munged.pid:munged"; do
        local file=${entry%%:*} name=${entry##*:}
        if pid_alive "$state/$file"; then echo "$name running ($(cat "$state/$file"))"; else echo "$name stopped"; fi
    done
}

case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up "${2:-}" ;;
    down) cmd_down "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    *) die "usage: $0 install | up STATE_DIR | down STATE_DIR | status STATE_DIR" ;;
esac
