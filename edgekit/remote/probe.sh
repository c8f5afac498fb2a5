# edgekit node probe: POSIX sh, sent on stdin (`sh -s`), prints key=value lines.
# Reads the same files and commands on a Pi and on a virtual node; hardware paths sit under
# $EDGEKIT_SYSROOT (unset on a real board). Never fails as a whole: a missing source is empty.
R="${EDGEKIT_SYSROOT:-}"
R="${R%/}"
kv() { printf '%s=%s\n' "$1" "$2"; }
first() { [ -r "$1" ] && head -c 4096 "$1" | tr -d '\000' | head -n 1; }
kv model "$(first "$R/proc/device-tree/model")"
kv arch "$(uname -m 2>/dev/null)"
kv long_bit "$(getconf LONG_BIT 2>/dev/null)"
kv kernel "$(uname -r 2>/dev/null)"
kv cores "$(grep -c '^processor' "$R/proc/cpuinfo" 2>/dev/null)"
kv features "$(grep -m1 -i '^Features' "$R/proc/cpuinfo" 2>/dev/null | cut -d: -f2-)"
kv mem_total_kb "$(awk '/^MemTotal:/{print $2}' "$R/proc/meminfo" 2>/dev/null)"
kv mem_avail_kb "$(awk '/^MemAvailable:/{print $2}' "$R/proc/meminfo" 2>/dev/null)"
kv disk_free_kb "$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2{print $4}')"
kv os "$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
kv python "$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
kv temp_mc "$(first "$R/sys/class/thermal/thermal_zone0/temp")"
kv cur_freq_khz "$(first "$R/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")"
kv max_freq_khz "$(first "$R/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")"
if command -v vcgencmd >/dev/null 2>&1; then
  kv throttled "$(vcgencmd get_throttled 2>/dev/null | sed -n 's/^throttled=//p')"
  kv vcgencmd yes
else
  kv vcgencmd no
fi
# booted with systemd (sd_booted), and this user's manager answering (what deploy's user
# units need; over SSH pam_systemd starts it and sets XDG_RUNTIME_DIR)
if [ -d /run/systemd/system ]; then
  kv systemd yes
  kv systemd_user "$(systemctl --user is-system-running 2>/dev/null | head -n 1)"
else
  kv systemd no
fi
kv user "$(id -un 2>/dev/null)"
RT="$HOME/.edgekit/runtime/bin/python"
if [ -x "$RT" ]; then
  # one runtime python: native= (kernel variant), native_problem=, onnxruntime=, litert=
  # (a runtime from an older edgekit has no such module: the probe as a whole never fails)
  "$RT" -m edgekit.node.stack 2>/dev/null || kv native_problem "runtime python failed ($?)"
fi
