# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifier of the balancer scenario: both balancers back on the baseline, and the measurements."""

testinfra_hosts = ["lb1", "lb2"]

STATE = ("python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
         "s.sendall(b'show servers state demoapp\\n'); print(s.makefile().read())\"")


def servers_state(host):
    out = host.run(STATE)
    assert out.rc == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line and not line.startswith(("#", "1"))]
    # columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight
    return dict((f[3], {"op": int(f[5]), "admin": int(f[6]), "weight": int(f[7]), "initial": int(f[8])})
                for f in lines if len(f) > 8)


def test_every_server_ready_up_and_back_on_initial_weight(host):
    state = servers_state(host)
    assert sorted(state) == ["app%d" % i for i in range(1, 7)]
    for name, s in state.items():
        assert s["admin"] == 0, name  # no maint/drain bit left
        assert s["op"] == 2, name  # running (UP)
        assert s["weight"] == s["initial"], name
