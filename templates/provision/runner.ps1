# Written by the image bakery: runs the provisioning plan from the config media, as SYSTEM, at each boot.
# The contract the host reads offline after the power-off (see pipeline/build/provision.py):
#   C:\ProgramData\bakery\provision\NN-name.log and NN-name.exit for each step, "next" (the step to resume
#   at after a reboot), "failed" (the step that failed), "finished" (sysprep was started).
# Exit code 3010 (or reboot: yes) reboots before the next step; with repeat: yes a 3010 runs the step again
# after the reboot. The host, not this script, enforces the reboot and time limits.
param([Parameter(Mandatory = $true)][string]$Media)
$ErrorActionPreference = 'Stop'
$results = Join-Path $env:ProgramData 'bakery\provision'
New-Item -ItemType Directory -Force -Path $results | Out-Null
$config = ConvertFrom-StringData ((Get-Content (Join-Path $Media 'runner.cfg') -Raw) -replace "'", '')
$plan = Import-Csv -Delimiter "`t" -Path (Join-Path $Media 'plan.tsv')
$nextFile = Join-Path $results 'next'
$next = if (Test-Path $nextFile) { [int](Get-Content $nextFile) } else { 1 }

function Invoke-WindowsUpdate([string]$log) {
    $session = New-Object -ComObject Microsoft.Update.Session
    $found = $session.CreateUpdateSearcher().Search("IsInstalled=0 and Type='Software' and IsHidden=0").Updates
    $excluded = @($config.EXCLUDE_KBS -split ' ' | Where-Object { $_ })
    $wanted = New-Object -ComObject Microsoft.Update.UpdateColl
    foreach ($update in $found) {
        $kbs = @($update.KBArticleIDs | ForEach-Object { "KB$_" })
        if ($kbs | Where-Object { $excluded -contains $_ }) { "skipped (excluded): $($update.Title)" | Add-Content $log; continue }
        if (-not $update.EulaAccepted) { $update.AcceptEula() }
        $wanted.Add($update) | Out-Null
        "selected: $($update.Title)" | Add-Content $log
    }
    if ($wanted.Count -eq 0) { "no applicable updates" | Add-Content $log; return 0 }
    $downloader = $session.CreateUpdateDownloader(); $downloader.Updates = $wanted; $downloader.Download() | Out-Null
    $installer = $session.CreateUpdateInstaller(); $installer.Updates = $wanted
    $outcome = $installer.Install()
    "installed $($wanted.Count) update(s): result code $($outcome.ResultCode), reboot required $($outcome.RebootRequired)" | Add-Content $log
    if ($outcome.ResultCode -notin 2, 3) { return 1 }  # 2 succeeded, 3 succeeded with errors
    if ($outcome.RebootRequired) { return 3010 }
    return 0
}

function Invoke-Step($step, [string]$log) {
    $file = Join-Path $Media "files\$($step.file)"
    switch ($step.kind) {
        'powershell' { & powershell.exe -NoProfile -ExecutionPolicy Bypass -File $file $step.arguments *>> $log; return $LASTEXITCODE }
        'cmd' { & cmd.exe /c "`"$file`" $($step.arguments) >> `"$log`" 2>&1"; return $LASTEXITCODE }
        'msi' { return (Start-Process msiexec.exe -Wait -PassThru -ArgumentList "/i `"$file`" /qn /norestart /l*v `"$log`" $($step.arguments)").ExitCode }
        'msu' { return (Start-Process wusa.exe -Wait -PassThru -ArgumentList "`"$file`" /quiet /norestart").ExitCode }
        'exe' { return (Start-Process $file -Wait -PassThru -ArgumentList $step.arguments).ExitCode }
        'windows-update' { return Invoke-WindowsUpdate $log }
        'cloudbase-init' {
            $code = (Start-Process msiexec.exe -Wait -PassThru -ArgumentList "/i `"$file`" /qn /norestart /l*v `"$log`" LOGGINGSERIALPORTNAME=COM1 RUN_SERVICE_AS_LOCAL_SYSTEM=1").ExitCode
            $conf = Join-Path ${env:ProgramFiles} 'Cloudbase Solutions\Cloudbase-Init\conf'
            Copy-Item (Join-Path $Media "files\$($step.arguments)") (Join-Path $conf 'cloudbase-init.conf') -Force
            return $code
        }
    }
    "unknown step kind $($step.kind)" | Add-Content $log
    return 1
}

foreach ($step in $plan) {
    $index = [int]$step.index
    if ($index -lt $next) { continue }
    $base = Join-Path $results ('{0:D2}-{1}' -f $index, $step.name)
    try { $code = [int](Invoke-Step $step "$base.log") } catch { $_ | Out-String | Add-Content "$base.log"; $code = 1 }
    Set-Content "$base.exit" $code
    if ($code -eq 3010 -and $step.repeat -eq 'yes') { Restart-Computer -Force; exit 0 }
    if ($code -ne 0 -and $code -ne 3010) { Set-Content (Join-Path $results 'failed') $index; Stop-Computer -Force; exit 0 }
    Set-Content $nextFile ($index + 1)
    if ($code -eq 3010 -or $step.reboot -eq 'yes') { Restart-Computer -Force; exit 0 }
}

# The launcher and its policy entries are removed by the host, offline, after this guest powers off.
if ($config.SYSPREP -ne 'yes') { Set-Content (Join-Path $results 'finished') 'no sysprep'; Stop-Computer -Force; exit 0 }
$unattend = Join-Path $env:SystemRoot 'System32\Sysprep\unattend.xml'
Copy-Item (Join-Path $Media $config.SYSPREP_UNATTEND) $unattend -Force
Set-Content (Join-Path $results 'finished') "sysprep $($config.SYSPREP_ARGUMENTS)"
Start-Process (Join-Path $env:SystemRoot 'System32\Sysprep\sysprep.exe') -ArgumentList $config.SYSPREP_ARGUMENTS -Wait
