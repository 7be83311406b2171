<?php
// Demonstrates probe mode: with CONDITIONAL_PROBE=1 print only the data's last-modified time.
$data = json_decode(file_get_contents(__DIR__ . '/news-data.json'), true);

if (getenv('CONDITIONAL_PROBE') === '1') {
    header('Content-Type: text/plain; charset=utf-8');
    echo strtotime($data['updated']), "\n";
    exit;
}

header('Content-Type: text/html; charset=utf-8');
?>
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>News</title></head>
<body>
<h1>News</h1>
<p>Updated <?= htmlspecialchars($data['updated']) ?></p>
<ul>
<?php foreach ($data['entries'] as $entry): ?>
<li><?= htmlspecialchars($entry) ?></li>
<?php endforeach; ?>
</ul>
</body>
</html>
