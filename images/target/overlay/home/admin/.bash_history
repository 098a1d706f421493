ls -la
cd /opt/app
ls -la
sudo tail -n 50 /var/log/syslog
df -h
exit
