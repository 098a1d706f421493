ls -la
cd /var/www/html
vim config.php
sudo systemctl restart nginx
tail -f /var/log/nginx/access.log
mysql -u app -p
git pull
exit
