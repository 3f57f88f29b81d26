/* The kernel's floor for the transcript fan-out (BENCHMARKS.md, session 13): N TCP connections
 * on 127.0.0.1, and the time to send one SIZE-byte message to each, from THREADS threads, with
 * nothing else done per message. Options: n=10000 size=160 threads=2 rounds=10 warm=20,
 * shuf (send in a random order), ts (SO_TIMESTAMPNS on the receivers), sep (senders in an epoll
 * set too), idlereader / reader (two SCHED_IDLE / normal threads read the receivers meanwhile),
 * noepoll, noquick, pause=MS (MS between rounds, the receivers read halfway: segments of a
 * call come a second or more apart, as in bench/fanout.sh, and a receiver that has been idle
 * longer than its retransmission timeout ACKs the next segment at once, in the sender's system
 * call on loopback), each (print every round's time).
 *   gcc -O2 -o /tmp/sendfloor bench/sendfloor.c -lpthread && /tmp/sendfloor n=9000 threads=2
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/resource.h>

static int TS = 0; static int READER = 0; static int EPFD; static int SEP = 0;
#include <sched.h>
static void *reader(void*a){ struct sched_param p={0}; if(READER==2) sched_setscheduler(0,SCHED_IDLE,&p); struct epoll_event ev[256]; char b[4096]; for(;;){ int n=epoll_wait(EPFD,ev,256,-1); for(int i=0;i<n;i++){ while(recv(ev[i].data.fd,b,sizeof b,MSG_DONTWAIT)>0); } } return 0; }
 static int SHUF = 0; static int PAUSE = 0; static int EACH = 0; static int N = 10000, SIZE = 160, ROUNDS = 10, THREADS = 1, EPOLL = 1, NOQUICK = 0, WARM = 20;
static int *snd, *rcv;
static char buf[65536];

static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void drain(void){ char b[65536]; for(int i=0;i<N;i++){ while(recv(rcv[i],b,sizeof b,MSG_DONTWAIT)>0); if(NOQUICK){int z=0;setsockopt(rcv[i],IPPROTO_TCP,TCP_QUICKACK,&z,sizeof z);} } }

struct job{int from,to;};
static void *run(void *a){ struct job *j=a;
  { for(int i=j->from;i<j->to;i++) if(send(snd[i],buf,SIZE,MSG_DONTWAIT)!=SIZE){perror("send");exit(1);} return 0; }
  return 0; }

static double round_(void){ pthread_t t[16]; struct job j[16]; double s=now(); int per=(N+THREADS-1)/THREADS;
  for(int k=0;k<THREADS;k++){ j[k].from=k*per; j[k].to=(k+1)*per>N?N:(k+1)*per; if(k) pthread_create(&t[k],0,run,&j[k]); }
  run(&j[0]); for(int k=1;k<THREADS;k++) pthread_join(t[k],0); return now()-s; }

int main(int argc,char**argv){
  for(int i=1;i<argc;i++){ char*a=argv[i]; if(!strncmp(a,"n=",2))N=atoi(a+2); else if(!strncmp(a,"size=",5))SIZE=atoi(a+5); else if(!strncmp(a,"threads=",8))THREADS=atoi(a+8); else if(!strcmp(a,"ts"))TS=1; else if(!strcmp(a,"reader"))READER=1; else if(!strcmp(a,"idlereader"))READER=2; else if(!strcmp(a,"sep"))SEP=1; else if(!strcmp(a,"shuf"))SHUF=1; else if(!strcmp(a,"noepoll"))EPOLL=0; else if(!strcmp(a,"noquick"))NOQUICK=1; else if(!strncmp(a,"warm=",5))WARM=atoi(a+5); else if(!strncmp(a,"pause=",6))PAUSE=atoi(a+6); else if(!strcmp(a,"each"))EACH=1; else if(!strncmp(a,"rounds=",7))ROUNDS=atoi(a+7);}
  struct rlimit rl={65536,65536}; setrlimit(RLIMIT_NOFILE,&rl);
  memset(buf,'x',sizeof buf);
  snd=calloc(N,sizeof(int)); rcv=calloc(N,sizeof(int));
  int l=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in ad={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)}; int one=1;
  setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,sizeof one); bind(l,(void*)&ad,sizeof ad); listen(l,4096); socklen_t al=sizeof ad; getsockname(l,(void*)&ad,&al);
  int ep=epoll_create1(0); EPFD=ep; int sep=epoll_create1(0);
  for(int i=0;i<N;i++){ rcv[i]=socket(AF_INET,SOCK_STREAM,0); if(connect(rcv[i],(void*)&ad,sizeof ad)){perror("connect");return 1;} snd[i]=accept(l,0,0); if(snd[i]<0){perror("accept");return 1;}
    setsockopt(snd[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one); setsockopt(rcv[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one); if(TS) setsockopt(rcv[i],SOL_SOCKET,SO_TIMESTAMPNS,&one,sizeof one); fcntl(snd[i],F_SETFL,O_NONBLOCK); fcntl(rcv[i],F_SETFL,O_NONBLOCK);
    if(EPOLL){ struct epoll_event e={.events=EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET,.data.fd=rcv[i]}; epoll_ctl(ep,EPOLL_CTL_ADD,rcv[i],&e);} if(SEP){ struct epoll_event e={.events=EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET,.data.fd=snd[i]}; epoll_ctl(sep,EPOLL_CTL_ADD,snd[i],&e);} }
  if(SHUF){ srand(7); for(int i=N-1;i>0;i--){ int j=rand()%(i+1); int t=snd[i];snd[i]=snd[j];snd[j]=t; t=rcv[i];rcv[i]=rcv[j];rcv[j]=t; } }
  for(int w=0;w<WARM;w++){ int t=THREADS; THREADS=1; round_(); THREADS=t; drain(); }
  if(PAUSE) usleep(PAUSE*1000); /* the first timed round after a pause too */
  if(READER){ pthread_t r; pthread_create(&r,0,reader,0); pthread_t r2; pthread_create(&r2,0,reader,0);}
  double best=1e18,sum=0; for(int r=0;r<ROUNDS;r++){ double d=round_(); if(PAUSE) usleep(PAUSE*500); drain(); if(PAUSE) usleep(PAUSE*500); sum+=d; if(d<best)best=d; if(EACH) printf("%.0f ",d); }
  printf("%sreader=%d pause=%d sep=%d shuf=%d n=%d size=%d threads=%d epoll=%d noquick=%d: best %.0f us (%.2f us/send) mean %.0f us\n",EACH?"\n":"",READER,PAUSE,SEP,SHUF,N,SIZE,THREADS,EPOLL,NOQUICK,best,best/N,sum/ROUNDS);
  return 0; }
