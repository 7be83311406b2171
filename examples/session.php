<?php
// Demonstrates session mode: the ETag covers the PHPSESSID cookie and the session file's content.
$dir = getenv('CONDITIONAL_SESSION_DIR');
if ($dir !== false && $dir !== '') {
    session_save_path($dir);
}
session_cache_limiter('');  // no PHP cache headers: the wrapper sets Cache-Control and Expires
session_start();

if (($_GET['visit'] ?? '') === '1') {
    $_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
}
$visits = (int) ($_SESSION['visits'] ?? 0);

header('Content-Type: text/html; charset=utf-8');
?>
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Session</title></head>
<body>
<p>Hello visitor, visits: <?= $visits ?></p>
</body>
</html>
