apt update
apt upgrade -y
systemctl status nginx
df -h
free -m
cd /opt/app
ls -la
cat .env
docker ps
journalctl -u app --since today
tail -n 100 /var/log/syslog
ss -tlnp
exit
