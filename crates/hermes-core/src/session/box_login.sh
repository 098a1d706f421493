# One SSH session, as sshd's session process would run it. Not a file in the box:
# Hermes hands it to a bash started as "sshd: USER@pts/N" with an empty environment,
# on that bash's stdin (a pipe), with its comment lines taken out. The whole of it is
# one group, which bash reads to the end before running any of it, so it can put
# /dev/null on stdin at once, as sshd's session process has. The parameters arrive on
# fd 6 and the client's stdin on fd 3. Creates the account at first login, prints
# what PAM and sshd print (MOTD, "Last login:"), runs the user's shell or command as
# that user, writes utmp/wtmp/lastlog and auth.log as sshd does, and exits with the
# shell's status. Everything before the prompt uses bash builtins where it can: it
# is on the path from login to prompt, in a container with half a CPU.
{
exec 0< /dev/null
printf sshd > /proc/$$/comm 2>/dev/null
# Parameters are NAME=value lines, the command last (it may span lines). Names this
# helper does not know are skipped, so a newer caller can talk to an older image.
user= src= src_port= dst= dst_port= term= lang=C.UTF-8 x11= agent= mode=notty
subsystem= command=
client_env=()
while IFS= read -r line <&6 || [ -n "$line" ]; do
  case $line in
    command=*)
      command=${line#command=}
      while IFS= read -r line <&6 || [ -n "$line" ]; do command+=$'\n'$line; done
      break ;;
    user=*) user=${line#*=} ;;
    src=*) src=${line#*=} ;;
    src_port=*) src_port=${line#*=} ;;
    dst=*) dst=${line#*=} ;;
    dst_port=*) dst_port=${line#*=} ;;
    term=*) term=${line#*=} ;;
    lang=*) lang=${line#*=} ;;
    x11=*) x11=${line#*=} ;;
    agent=*) agent=${line#*=} ;;
    mode=*) mode=${line#*=} ;;
    subsystem=*) subsystem=${line#*=} ;;
    env=LC_*=*) client_env+=("${line#env=}") ;;
  esac
  line=
done
exec 6<&-
if [ -z "$user" ]; then
  # Never a silent session: a broken hand-over is an error the operator sees.
  echo "no session parameters on fd 6" >&2
  exit 255
fi
PATH=/usr/sbin:/usr/bin:/sbin:/bin

account() {
  local name rest
  while IFS=: read -r name _ uid gid _ home shell; do
    [ "$name" = "$user" ] && return 0
  done < /etc/passwd
  return 1
}
# The history a new account starts with: what its owner would have typed, only
# programs this box has, a different handful for each account.
history_lines=(
  "ls" "ls -la" "cd" "cd /tmp" "cd .." "pwd" "df -h" "free -m" "uptime" "w" "top"
  "ps aux" "ip a" "cat /etc/os-release" "uname -a" "crontab -l" "ssh-keygen -t ed25519"
  "python3 --version" "sudo -i" "ls -la ~/.ssh" "vi .bashrc" "clear" "history" "exit"
)
new_account=
if ! account; then
  # Cloud images' and boards' default users administer the machine.
  case $user in
    admin|administrator|ubuntu|debian|pi|ec2-user|azureuser|centos|vagrant|devops|deploy)
      useradd --create-home --shell /bin/bash --groups sudo "$user" > /dev/null 2>&1 ;;
    *) useradd --create-home --shell /bin/bash "$user" > /dev/null 2>&1 ;;
  esac
  if account; then
    new_account=1
  else
    uid=0 gid=0 home=/ shell=/bin/bash
  fi
fi
[ -n "$shell" ] || shell=/bin/bash
if [ "$uid" = 0 ]; then
  path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
else
  path=/usr/local/bin:/usr/bin:/bin:/usr/games
fi
if [ ! -d "$home" ]; then
  echo "Could not chdir to home directory $home: No such file or directory" >&2
  home=/
fi

tty=
if [ "$mode" != notty ]; then
  tty=$(tty <&3 2> /dev/null) || tty=
fi
env_for_user=(
  HOME="$home" USER="$user" LOGNAME="$user" SHELL="$shell" PATH="$path"
  MAIL="/var/mail/$user" LANG="$lang"
  SSH_CLIENT="$src $src_port $dst_port" SSH_CONNECTION="$src $src_port $dst $dst_port"
  "${client_env[@]}"
)
if [ -n "$tty" ]; then
  env_for_user+=(TERM="$term" SSH_TTY="$tty")
fi
# X11 forwarding as sshd sets it up (X11DisplayOffset 10, X11UseLocalhost yes), for
# shells and commands, not subsystems; xauth's own complaints reach the client.
xauth_input=
if [ -n "$x11" ] && [ -z "$subsystem" ] && [ -x /usr/bin/xauth ]; then
  read -r x11_proto x11_cookie x11_screen <<< "$x11"
  env_for_user+=(DISPLAY="localhost:10.${x11_screen:-0}")
  xauth_input="remove unix:10.${x11_screen:-0}"$'\n'"add unix:10.${x11_screen:-0} $x11_proto $x11_cookie"$'\n'
fi
# Agent forwarding: sshd's socket directory and name. Nothing listens on the socket.
agent_dir=
if [ -n "$agent" ] && [ -z "$subsystem" ]; then
  agent_dir=$(mktemp -d /tmp/ssh-XXXXXXXXXX 2> /dev/null) && {
    chown "$uid:$gid" "$agent_dir"
    env_for_user+=(SSH_AUTH_SOCK="$agent_dir/agent.$$")
  }
fi
run_as_user=()
if [ "$uid" != 0 ]; then
  run_as_user=(setpriv "--reuid=$uid" "--regid=$gid" --init-groups --)
fi
# utmp, wtmp and lastlog writer (box_records.py), run by python3 from its stdin.
IFS= read -r -d '' records <<'RECORDS'
@RECORDS@
RECORDS
if [ -n "$new_account" ] && [ "$uid" != 0 ]; then
  printf '%s\n' "${history_lines[@]}" | shuf -n $((RANDOM % 8 + 5)) |
    "${run_as_user[@]}" env -i HOME="$home" /bin/bash -c 'umask 077; cat > "$HOME/.bash_history"' > /dev/null 2>&1
fi
line=${tty#/dev/}

# What sshd does as the user before the shell: the agent socket, xauth.
as_user_setup() {
  if [ -n "$agent_dir" ]; then
    "${run_as_user[@]}" python3 -I -S -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$agent_dir/agent.$$" 2> /dev/null
  fi
  if [ -n "$xauth_input" ]; then
    printf '%s' "$xauth_input" | "${run_as_user[@]}" env -i -C "$home" "${env_for_user[@]}" /usr/bin/xauth -q -
  fi
}
cleanup_at_logout() {
  [ -n "$agent_dir" ] && rm -rf "$agent_dir"
}

# auth.log lines go out in the background; utmp/wtmp/lastlog are written before the
# shell starts (about 10 ms), so a `w` typed at once shows the session.
bookkeeping_at_login() {
  logger -t "sshd[$$]" -p auth.info "Accepted password for $user from $src port $src_port ssh2"
  logger -t "sshd[$$]" -p auth.info "pam_unix(sshd:session): session opened for user $user(uid=$uid) by (uid=0)"
}

if [ "$mode" = pty ] && [ -n "$tty" ]; then
  # PAM's MOTD (pam_motd runs update-motd.d into /run/motd.dynamic at each login),
  # then sshd's "Last login:" from lastlog (struct lastlog: 292 bytes a uid; a 32-bit
  # time, a 32-byte line, a 256-byte host).
  run-parts --lsbsysinit /etc/update-motd.d > /run/motd.dynamic.new 2> /dev/null \
    && mv -f /run/motd.dynamic.new /run/motd.dynamic
  while IFS= read -r motd || [ -n "$motd" ]; do printf '%s\n' "$motd"; done < /run/motd.dynamic 2> /dev/null
  while IFS= read -r motd || [ -n "$motd" ]; do printf '%s\n' "$motd"; done < /etc/motd 2> /dev/null
  last=$(od -An -t d4 -j $((uid * 292)) -N 4 /var/log/lastlog 2> /dev/null)
  last=${last//[[:space:]]/}
  if [ -n "$last" ] && [ "$last" != 0 ]; then
    from=$(dd if=/var/log/lastlog bs=1 skip=$((uid * 292 + 36)) count=256 status=none 2> /dev/null | tr -d '\0')
    printf 'Last login: %s from %s\n' "$(date -d "@$last" '+%a %b %e %H:%M:%S %Y')" "$from"
  fi
  python3 -I -S - login "$user" "$uid" "$line" "$src" "$$" <<< "$records" > /dev/null 2>&1
  as_user_setup
  trap 'kill -HUP $child 2> /dev/null' HUP
  # The privileges go first: the home directory may be closed to a root without
  # CAP_DAC_OVERRIDE.
  "${run_as_user[@]}" env -i -C "$home" "${env_for_user[@]}" "$shell" -c 'exec -a "-${0##*/}" "$0"' "$shell" <&3 &
  child=$!
  bookkeeping_at_login > /dev/null 2>&1 < /dev/null &
  bookkeeping=$!
  while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2> /dev/null || break
  done
  wait "$bookkeeping" 2> /dev/null
  python3 -I -S - logout "$user" "$uid" "$line" "$src" "$$" <<< "$records" > /dev/null 2>&1
  logger -t "sshd[$$]" -p auth.info "pam_unix(sshd:session): session closed for user $user" 2> /dev/null
  cleanup_at_logout
  exit "$status"
fi

bookkeeping_at_login > /dev/null 2>&1 < /dev/null &
bookkeeping=$!
# Debian 12's sshd logs a subsystem request only when it fails.
as_user_setup
# sshd runs the command as `<shell basename> -c <command>`: $0 is "bash", not a path.
"${run_as_user[@]}" env -i -C "$home" "${env_for_user[@]}" \
  /bin/bash -c 'exec -a "${0##*/}" "$0" -c "$1"' "$shell" "$command" <&3
status=$?
wait "$bookkeeping" 2> /dev/null
logger -t "sshd[$$]" -p auth.info "pam_unix(sshd:session): session closed for user $user" 2> /dev/null
cleanup_at_logout
exit "$status"
}
