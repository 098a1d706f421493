apt update
apt upgrade -y
df -h
free -m
cd /opt/app
ls -la
cat .env
tail -n 100 /var/log/syslog
ss -tlnp
crontab -l
exit
